"""Search a folder of person images by text with a GA-DMS model: gallery index, search, token-score explanations."""
