"""Small helpers shared by every package of the project (model, data builders, training, evaluation,
retrieval): image reading, command-line value types. Light to import: no torch, no transformers."""
