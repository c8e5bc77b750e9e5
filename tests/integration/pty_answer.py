"""Run a command on a real pseudo-terminal and answer one question it asks.

Usage: pty_answer.py PROMPT ANSWER PROGRAM [ARGS...]   (env as given). When PROMPT appears in
the output, ANSWER and a newline are typed. Prints everything the terminal showed and exits with
the program's exit code; gives up after 60 s.
"""
import os, pty, select, sys, time

prompt, answer = sys.argv[1].encode(), sys.argv[2].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[3], sys.argv[3:])

out = b""
answered = False
deadline = time.time() + 60
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
    if not answered and prompt in out:
        os.write(fd, answer + b"\r")
        answered = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
