"""Converters from training frameworks to rnninfer's canonical spec + tensors."""
