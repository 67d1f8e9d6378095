"""Command-line options: ``BaseOptions`` plus ``TrainOptions`` / ``TestOptions``.

Models and dataset modes add their own options through their static
``modify_commandline_options(parser, is_train)`` hooks.
"""
