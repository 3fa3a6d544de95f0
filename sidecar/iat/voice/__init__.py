"""Voice for the copilot (SPEC 2.6.1-2, 5.6 voice_requests, 9.1 Voice): speech to text and text to speech.

- audio.py: decoding WAV / FLAC / OGG to mono PCM at the rate an engine needs, and WAV encoding.
- stt.py / tts.py: the engine interfaces and registries (vosk and openai; local pyttsx3 and openai).
- repo.py / service.py: voice_requests rows and the one path every STT/TTS call takes (asset in, engine, asset
  out, latency, ledger for paid engines, chat message linked).
"""
