"""The platform's recognizers: face identifiers, face detectors, classifiers."""
