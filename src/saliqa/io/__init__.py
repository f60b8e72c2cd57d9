"""The input/output layer every other part of saliqa stands on: atomic writes, tables with their provenance,
file hashes, downloads, weight discovery, file names and progress. It imports nothing of saliqa but
:mod:`saliqa.errors`, so quality models, classifiers, the pipeline and the report can all use it."""
