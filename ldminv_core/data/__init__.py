"""The audited data: image folders and their captions (:mod:`.image_folders`, :mod:`.captions`,
opening the files safely in :mod:`.safe_files`), and the model-free features a blind baseline
reads from the files (:mod:`.blind_features`).

Import the submodules themselves; this package imports none of them, so that light modules can
reach one without loading torch.
"""
