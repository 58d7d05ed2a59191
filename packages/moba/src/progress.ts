/**
 * Progress on stderr for long phases. On a TTY: a spinner line with the phase name (elapsed time once
 * it passes a second), erased when the phase ends. Otherwise (pipes, CI logs): one plain line when
 * each phase starts.
 */

/** Where progress goes: a stream-like sink that may be a TTY. */
export interface ProgressSink {
  write(s: string): unknown;
  readonly isTTY?: boolean;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const SHOW_TIME_AFTER_MS = 1000;

/** A phase reporter; `start` a phase, `end` it; one phase at a time. */
export class Progress {
  private timer: ReturnType<typeof setInterval> | undefined;
  private drawn = false;
  private t0 = 0;
  private frame = 0;
  private label = '';
  private lastLine = '';

  constructor(private readonly sink: ProgressSink | undefined, private readonly prefix = 'moba') {}

  /** Starts a phase (ends the previous one if it is still running). */
  start(label: string): void {
    this.end();
    this.label = label;
    this.t0 = performance.now();
    if (!this.sink) return;
    if (!this.sink.isTTY) {
      if (label !== this.lastLine) this.sink.write(`${this.prefix}: ${label} …\n`); // repeated calls of one phase: one line
      this.lastLine = label;
      return;
    }
    // Drawn at once, because a phase that blocks the main thread never lets the timer fire; the timer
    // animates it (with the elapsed time) while a backend computes on worker threads.
    this.draw();
    this.timer = setInterval(() => this.draw(), 100);
    this.timer.unref?.();
  }

  /** Ends the current phase, erasing the spinner line if one was drawn. */
  end(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.drawn) this.sink?.write('\r\x1b[2K');
    this.drawn = false;
  }

  private draw(): void {
    const ms = performance.now() - this.t0;
    const time = ms >= SHOW_TIME_AFTER_MS ? ` ${(ms / 1000).toFixed(1)} s` : '';
    this.sink!.write(`\r\x1b[2K${FRAMES[this.frame++ % FRAMES.length]} ${this.prefix}: ${this.label} …${time}`);
    this.drawn = true;
  }
}
