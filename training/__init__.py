"""Offline training and evaluation of GoodPoint and MD-Net: ``goodpoint-train``, ``goodpoint-eval``.

Installed with the package as ``goodpoint_ros.training`` (and imported only under that name, so one
task registry exists); the node never imports it. Building the photo dataset
(``scripts/build_dataset.py``) and the resume states of long runs (``resume/``) stay in the checkout.
"""
