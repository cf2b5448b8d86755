"""The graph layer: whole models on tvmconv's kernels, three ways in.

    passes.py     torch.fx passes: BatchNorm folding, the fusable patterns matched on the dataflow, the
                  spec of a traced convolution node (``node_spec``)
    converter.py  ``tvmconv.convert``: a model's convolutions swapped for tvmconv modules, decided per
                  layer on the model's own inputs
    dynamo.py     ``torch.compile(model, backend="tvmconv")``: the same passes on Dynamo's graph
    lowering.py   a model to one Relax module: torch.export, tvmconv kernels as ``call_tir``, epilogues
                  fused into them, every other op legalized
    compiler.py   ``tvmconv.compile``: that module built and run in TVM's VM, one call per forward, cached

The modules load on first use: importing the package imports none of them (nor TVM).
"""
