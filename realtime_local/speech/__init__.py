"""Offline speech stages (VAD, STT, TTS, responder) behind the small interfaces in `base`."""
