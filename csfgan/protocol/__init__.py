"""The CSF-GAN evaluation protocol as something any method can be scored under.

    spec.py         the protocol in memory: test images, holes, captions, counterfactual edits
    export.py       ``csfgan protocol export``: the protocol as a folder with a hashed manifest
    folder.py       reading an exported folder back, checked against its manifest and the data
    predictions.py  checking a folder of a method's outputs against the manifest before anything is measured
    score.py        ``csfgan score``: a folder of outputs measured by the code ``csfgan evaluate`` uses
    bins.py         metrics per mask-area bin (the irregular protocol, as LaMa reports them)
    peers.py        ``csfgan peer``: training-free classical inpainting (biharmonic, Telea) as a method
    predict.py      ``csfgan predict``: a trained CSF-GAN run as a method, reading only the folder
    commands.py     the subcommands' argument parsers (added to csfgan.cli's)

The one measuring code, shared with ``csfgan evaluate``, is :mod:`csfgan.measure`.
"""
