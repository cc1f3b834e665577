"""Stock Debian softphones driven as subprocesses: baresip 1.0 and linphone 5.1 (linphonec).

Each phone gets a folder of its own with its configuration; it plays a sine tone of its own
frequency as its microphone and records what it hears to a WAV file, so a test can check that
each side hears the other. Every process is started here and ended by its pid.

linphonec headless, what it takes (found with ``-d 6`` logs, linphone-cli 5.1.65):

- Its database folder must exist. linphonec opens ``$HOME/.local/share/linphone/linphone.db``;
  when the folder is missing it logs ``Unable to open linphone database with uri ...`` and the
  core never gets as far as opening its SIP listening point (no ``Creating listening point``
  line follows, no REGISTER is sent), and a call fails with ``Unable to set contact address
  ... as it is not valid`` then ``No listening point matching for [udp://127.0.0.1:PORT]``.
  Each phone here gets a HOME of its own with that folder made.
- A taken ``[sip] sip_port`` fails the same way (``udp bind() failed ... Address already in
  use``, then ``No listening point matching``): the ports come from ``free_port``.
- ``[sip] bind_address`` and ``[rtp] bind_address`` keep SIP, RTP and the SDP's ``c=`` on
  127.0.0.1 (without them it listens on ``[::0]`` and advertises the machine's LAN address).
- No sound card: ``soundcard use files`` then ``play FILE`` (our tone, 8 kHz mono WAV) and
  ``record FILE`` (what it hears, 8 kHz mono WAV) on its standard input, which must stay open
  (at end of input linphonec quits at once).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
import wave
from pathlib import Path

from tests.integration.harness import stop_process
from tests.media.audio import dominant, rms
from tests.media.audio import tone as sine

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


class Linphone:
    """One linphonec (linphone 5.1) process registered to pbx over UDP, with the codecs its
    config lists (PCMU here, as baresip offers): it plays ``tone`` Hz from a WAV file and
    records what it hears; ``auto_answer`` answers incoming calls (``linphonec -a``)."""

    def __init__(
        self,
        folder: Path,
        extension: str,
        password: str,
        server: tuple[str, int],
        *,
        tone: int,
        sip_port: int,
        rtp_port: int,
        domain: str | None = None,
    ) -> None:
        """``domain``: the tenant's, in the identity (default: the server's address)."""
        self.folder = folder
        self.extension = extension
        self.server = server
        self.home = folder / "home"
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.tone_file = folder / f"tone-{tone}.wav"
        with wave.open(str(self.tone_file), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(sine(tone, 30.0))
        host, port = server
        self.config = folder / "linphonerc"
        self.config.write_text(
            "\n".join(
                (
                    "[sip]",
                    f"sip_port={sip_port}",
                    "sip_tcp_port=0",
                    "sip_tls_port=0",
                    "bind_address=127.0.0.1",
                    "use_ipv6=0",
                    "default_proxy=0",
                    "[rtp]",
                    f"audio_rtp_port={rtp_port}",
                    "bind_address=127.0.0.1",
                    "[video]",
                    "enabled=0",
                    "[proxy_0]",
                    f"reg_proxy=<sip:{host}:{port};transport=udp>",
                    f"reg_identity=sip:{extension}@{domain or f'{host}:{port}'}",
                    "reg_expires=600",
                    "reg_sendregister=1",
                    "[auth_info_0]",
                    f"username={extension}",
                    f"passwd={password}",
                    "[audio_codec_0]",
                    "mime=PCMU",
                    "rate=8000",
                    "channels=1",
                    "enabled=1",
                    "",
                )
            ),
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.recordings: list[Path] = []

    def start(self, *, auto_answer: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        env["HOME"] = str(self.home)
        args = [require("linphonec"), "-c", str(self.config), "-d", "6"]
        args += ["-l", str(self.folder / "debug.log")]
        if auto_answer:
            args.append("-a")
        with (self.folder / "out.log").open("wb") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.command("soundcard use files")
        self.command(f"play {self.tone_file}")
        self.record()

    def command(self, line: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def record(self) -> None:
        """Record the next call to a file of its own."""
        self.recordings.append(self.folder / f"heard-{len(self.recordings)}.wav")
        self.command(f"record {self.recordings[-1]}")

    def dial(self, extension: str) -> None:
        host, port = self.server
        self.command(f"call sip:{extension}@{host}:{port}")

    def output(self) -> str:
        path = self.folder / "out.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def debug_log(self) -> str:
        path = self.folder / "debug.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, text: str, timeout: float = 15.0, count: int = 1) -> None:
        """Until ``text`` has been printed ``count`` times."""
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"linphonec {self.extension} ended:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"linphonec {self.extension}: no {text!r}:\n{self.output()[-3000:]}"
                )
            time.sleep(0.1)

    def hang_up(self) -> None:
        self.command("terminate all")

    def stop(self) -> None:
        """``quit`` (it unregisters), then SIGTERM/SIGKILL by pid if it lingers."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                self.command("quit")
                process.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
            stop_process(process, timeout=5)
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()

    def digest_lines(self, timeout: float = 5.0) -> tuple[list[str], list[str]]:
        """The WWW-Authenticate lines it received and the Authorization lines it sent (once it has
        sent one), from its debug log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.debug_log().splitlines()
            answers = [line for line in log if line.startswith("Authorization:")]
            if answers or time.monotonic() > deadline:
                challenges = [line for line in log if line.startswith("WWW-Authenticate:")]
                return challenges, answers
            time.sleep(0.1)

    def heard(self, candidates: tuple[float, ...], seconds: float = 2.0) -> tuple[float, float]:
        """(dominant frequency, rms) of the last ``seconds`` of the last call it recorded."""
        done = [str(path) for path in self.recordings if path.exists()]
        return heard_in(done, candidates, seconds)
