"""Providers turn a claimed row into prompts, images and tags: the contract (contract.py, the import path for your
own providers), the registry that picks one by name, and the implementations: offline, noop and openai (the only
openai importer), with the price table and secret redaction they use."""
