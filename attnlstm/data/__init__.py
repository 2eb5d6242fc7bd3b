"""Datasets: text corpora, vocabularies, and the download of the public datasets."""
