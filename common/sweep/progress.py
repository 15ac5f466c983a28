"""What a sweep shows while it runs: runs pending, running, done and failed, and each
running run's iteration and ETA. On a terminal the block is redrawn in place; otherwise
(a log file, CI) a plain line is printed for each change of state and, every
``every_s`` seconds, one line per running run.
"""
import sys
import time

STATES = ('pending', 'running', 'waiting', 'done', 'failed', 'stopped')


def counts_line(rows):
    counts = {s: 0 for s in STATES}
    for _, state, _ in rows:
        counts[state if state in counts else 'pending'] += 1
    shown = [f'{counts[s]} {s}' for s in STATES if s not in ('stopped', 'waiting') or counts[s]]
    return f'{len(rows)} runs: ' + ', '.join(shown)


class Display:
    """``update(rows)`` with rows [(run_id, state, detail)], as often as wished."""

    def __init__(self, out=None, tty=None, every_s=60.0):
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.every_s = every_s
        self._drawn = 0            # lines of the block last drawn (terminal)
        self._last = {}            # run_id -> (state, detail) last printed (plain)
        self._last_beat = time.monotonic()
        self._last_counts = None   # the counts line last printed (plain)

    def update(self, rows, final=False):
        if self.tty:
            self._redraw(rows)
        else:
            self._plain(rows, final)

    def message(self, text):
        """A line above the block (terminal) or in the stream."""
        if self.tty and self._drawn:
            self.out.write(f'\x1b[{self._drawn}F\x1b[J')
            self._drawn = 0
        self.out.write(text + '\n')
        self.out.flush()

    def _redraw(self, rows):
        lines = [counts_line(rows)]
        lines += [f'  {_line(run_id, state, detail)}' for run_id, state, detail in rows
                  if state in ('running', 'waiting', 'failed', 'stopped')]
        width = _terminal_width()
        text = ''.join(f'\x1b[2K{line[:width - 1]}\n' for line in lines)
        up = f'\x1b[{self._drawn}F' if self._drawn else ''
        self.out.write(up + text + '\x1b[J')
        self.out.flush()
        self._drawn = len(lines)

    def _plain(self, rows, final):
        stamp = time.strftime('%H:%M:%S')
        changed = False
        for run_id, state, detail in rows:
            if self._last.get(run_id, (None,))[0] != state:
                self._last[run_id] = (state, detail)
                if state != 'pending':
                    self.out.write(f'[{stamp}] {_line(run_id, state, detail)}\n')
                    changed = True
        now = time.monotonic()
        beat = now - self._last_beat >= self.every_s   # a sign of life, even with no change
        if beat or final:
            self._last_beat = now
            for run_id, state, detail in rows:
                if state == 'running':
                    self.out.write(f'[{stamp}] {run_id}: {detail}\n')
                    changed = True
        counts = counts_line(rows)
        if changed or beat or (final and counts != self._last_counts):
            self.out.write(f'[{stamp}] {counts}\n')
            self.out.flush()
            self._last_counts = counts


def _line(run_id, state, detail):
    return f'{run_id}: {state}' + (f', {detail}' if detail else '')


def _terminal_width():
    import shutil
    return shutil.get_terminal_size((120, 24)).columns
