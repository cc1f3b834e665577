"""Stock Debian softphones driven as subprocesses: baresip 1.0 and linphone 5.1 (linphonec).

Each phone gets a folder of its own with its configuration; it plays a sine tone of its own
frequency as its microphone and records what it hears to a WAV file, so a test can check that
each side hears the other. Every process is started here and ended by its pid.
"""

from __future__ import annotations

import glob
import shutil
import signal
import subprocess
import time
import wave
from pathlib import Path

from tests.integration.harness import stop_process
from tests.media.audio import dominant, rms

BARESIP_MODULES = "/usr/lib/baresip/modules"


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed: run scripts/test.sh (it installs it)")
    return path


class Baresip:
    """One baresip 1.0 process: ``ausine`` plays ``tone`` Hz, ``sndfile`` records both ways."""

    def __init__(
        self,
        folder: Path,
        extension: str,
        password: str,
        server: tuple[str, int],
        *,
        tone: int,
        sip_port: int,
        rtp_base: int,
        transport: str = "udp",
    ) -> None:
        self.folder = folder
        self.extension = extension
        self.server = server
        folder.mkdir(parents=True, exist_ok=True)
        # sip_port+1 is taken by baresip's TLS listener: callers space the ports out.
        (folder / "config").write_text(
            "\n".join(
                (
                    f"sip_listen 127.0.0.1:{sip_port}",
                    "audio_player aubridge,play",
                    f"audio_source ausine,{tone}",
                    "audio_alert aubridge,alert",
                    "ausrc_srate 48000",  # ausine makes 48 kHz stereo only
                    "auplay_srate 48000",
                    "ausrc_channels 2",
                    "auplay_channels 1",
                    f"module_path {BARESIP_MODULES}",
                    "module g711.so",
                    "module ausine.so",
                    "module aubridge.so",
                    "module sndfile.so",
                    "module account.so",
                    "module menu.so",
                    f"snd_path {folder}",
                    f"rtp_ports {rtp_base}-{rtp_base + 99}",
                    "",
                )
            ),
            encoding="utf-8",
        )
        host, port = server
        (folder / "accounts").write_text(
            f"<sip:{extension}@{host}:{port};transport={transport}>;auth_pass={password};"
            "regint=600;answermode=auto\n",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *commands: str) -> None:
        args = [require("baresip"), "-f", str(self.folder)]
        for command in commands:
            args += ["-e", command]
        with (self.folder / "out.log").open("wb") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def dial(self, extension: str) -> None:
        """Start the phone and call ``extension`` at once (after it has registered)."""
        host, port = self.server
        self.start(f"/dial sip:{extension}@{host}:{port}")

    def output(self) -> str:
        path = self.folder / "out.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"baresip {self.extension}: no {text!r}:\n{self.output()[-3000:]}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """Vanish: SIGKILL, no unregister (a phone that lost power or an app that was killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5)

    def heard(self, candidates: tuple[float, ...], seconds: float = 2.0) -> tuple[float, float]:
        """(dominant frequency, rms) of the last ``seconds`` of what the phone received."""
        return heard_in(sorted(glob.glob(str(self.folder / "dump-*-dec.wav"))), candidates, seconds)


def heard_in(
    files: list[str], candidates: tuple[float, ...], seconds: float
) -> tuple[float, float]:
    if not files:
        raise AssertionError("no recording of the received audio")
    with wave.open(files[-1]) as wav:
        assert wav.getframerate() == 8000
        assert wav.getnchannels() == 1
        pcm = wav.readframes(wav.getnframes())
    tail = pcm[-int(8000 * 2 * seconds) :]
    return dominant(tail, candidates), rms(tail)
