"""Running the study: notebooks through papermill, the sweep over k x seed x generator, the filter
ablation, and the aggregation and comparison of their records. The top layer: nothing in egmlib
imports it.

- :mod:`egmlib.workflow.pipeline` the notebooks in order, atomically (``make reproduce``)
- :mod:`egmlib.workflow.studies`  the choice studies of the generators and of the reconstruction
  network, on the validation split (``make studies``)
- :mod:`egmlib.workflow.sweep`    notebook 05 over a grid, locally or on a Dask cluster
- :mod:`egmlib.workflow.ablation` the filter ablation: its runs of 05 and its comparisons
  (notebook 07)
- :mod:`egmlib.workflow.records`  what a run leaves, input digests, comparing two records or two
  folders of records (across machines)
- :mod:`egmlib.workflow.results`  collecting run records, paired tests, the sweep's verdict
- :mod:`egmlib.workflow.quoted`   the numbers the README quotes, each tied to its record: checked
  by a test, rewritten by ``make reproduce``
- :mod:`egmlib.workflow.site`     the static site: README, executed notebooks, API (``make site``)
"""
