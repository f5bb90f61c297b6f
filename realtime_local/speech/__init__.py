"""Offline speech stages (VAD, STT, TTS, responder) behind the small interfaces in `base`.

CTranslate2 (Whisper) runs on libgomp. By default its worker threads spin at every barrier; on a
2-core machine shared with the media loop, Piper and other processes, a spinning thread that lost
its core stalls every parallel region: we measured single 2 s transcriptions taking 5-10 s under
load, and none with passive waiting. libgomp reads this once, when it is loaded, which is why it
is set here, before any stage imports ctranslate2. An explicit setting in the environment wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
