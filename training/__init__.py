"""Offline training and evaluation of GoodPoint and MD-Net (not installed on robots)."""
