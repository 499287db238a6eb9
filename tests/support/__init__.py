"""What the tests share: fakes (an OpenAI-shaped server, a photo server, shop importers, S3), helpers and
scripted providers. No test module imports another; they import from here."""
