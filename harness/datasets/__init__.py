"""Data sets: deterministic, with stable image ids, offline by default.

Each data set (a :class:`~harness.api.contracts.Dataset`) turns its parameters into a
:class:`~harness.api.contracts.DataSplit`: :mod:`~harness.datasets.splits` holds the protocols
and the seeded splits they share, :mod:`~harness.datasets.faces` ``lfw-subset``,
:mod:`~harness.datasets.folder` folder trees and :mod:`~harness.datasets.small` digits, scenes
and CIFAR-10. Resizing and channel conversion are not done here: that belongs to each
recognizer's input spec. The ``scenes`` pool is also the default overlay source of
transparent-overlay defenses.
"""
