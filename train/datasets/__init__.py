"""Converters from public data sets, as their publishers lay them out, to the labels CSV the trainer reads
(``image,score,category``, image paths relative to the CSV). One module per data set: ``python -m
train.datasets.NAME``. No torch."""
