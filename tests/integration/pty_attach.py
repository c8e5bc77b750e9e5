"""Drive `bottle run` through a real pseudo-terminal: output arrives, and a resize reaches the agent.

Usage: pty_attach.py BOTTLE_BIN [ARGS...]   (env as for bottle). Prints what the agent printed and
exits with bottle's exit code. The agent command is expected to print `stty size`, then READY,
wait for a line, print `stty size` again, then SLEEPING and sleep until Ctrl-C (sent as a byte).
PTY_ATTACH_KEYS (hex) replaces Ctrl-C with other keys: `1011` is Docker's detach (ctrl-p ctrl-q).
"""
import fcntl, os, pty, select, struct, sys, termios, time

def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

pid, fd = pty.fork()
if pid == 0:
    set_size(0, 24, 80)
    os.execv(sys.argv[1], sys.argv[1:])

out = b""
deadline = time.time() + 120
resized = False
interrupted = False
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    if not resized and b"READY" in out:
        set_size(fd, 40, 100)          # the kernel sends SIGWINCH to bottle
        time.sleep(1.0)                # let bottle forward the new size
        os.write(fd, b"go\r")
        resized = True
    if not interrupted and b"SLEEPING" in out:
        time.sleep(0.5)
        # Ctrl-C by default: in raw mode a byte for the agent's terminal.
        os.write(fd, bytes.fromhex(os.environ.get("PTY_ATTACH_KEYS", "03")))
        interrupted = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
