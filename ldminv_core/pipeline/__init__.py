"""The analysis pipeline: a model and two image folders -> a run folder.

:mod:`.config` the settings, :mod:`.plan` their checked form and the checks before anything
loads, :mod:`.output_folder` the ``--out`` checks, :mod:`.inputs` the model and images,
:mod:`.cost` the cost estimate, :mod:`.stages` what each stage computes and writes (rows of a
batch: :mod:`.rows`; the batch loop: :mod:`.batches`), :mod:`.run` :func:`run_analysis` itself,
:mod:`.distributed` and :mod:`.follower` the split across processes.

Import the submodules themselves; this package imports none of them.
"""
