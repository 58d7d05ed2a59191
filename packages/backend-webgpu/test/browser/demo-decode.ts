/** Drives the web demo's decode mode (examples/web/decode.ts) from the browser test. */
import type { Page } from 'playwright-core';
import type { DecodeState } from '../../../../examples/web/decode.js';
import { DECODE_COLOURS } from '../../../../examples/web/decode-plot.js';

export interface DecodeRun {
  readonly status: string;
  readonly state: DecodeState | null;
  /** Pixels of the plot canvas in each line colour. */
  readonly pixels: { moba: number; dense: number };
}

/** Sets the controls, clicks decode, waits for the page to finish and counts the line colours on the plot. */
export async function runDecodeMode(page: Page, p: { prompt: number; steps: number; blockSize: number; topk: number }): Promise<DecodeRun> {
  await page.waitForFunction(() => document.getElementById('status')?.dataset.state === 'ready', null, { timeout: 0 });
  await page.fill('#prompt', String(p.prompt));
  await page.fill('#steps', String(p.steps));
  await page.selectOption('#blockSize', String(p.blockSize));
  await page.fill('#topk', String(p.topk));
  await page.click('#decode');
  await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('status')?.dataset.state ?? ''), null, { timeout: 0 });
  return page.evaluate((colours) => {
    const c = document.getElementById('decodePlot') as HTMLCanvasElement;
    const img = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    const count = (rgb: readonly number[]): number => {
      let n = 0;
      for (let i = 0; i < img.length; i += 4) if (img[i] === rgb[0] && img[i + 1] === rgb[1] && img[i + 2] === rgb[2]) n++;
      return n;
    };
    return {
      status: document.getElementById('status')!.textContent ?? '',
      state: (globalThis as unknown as { decodeState?: DecodeState }).decodeState ?? null,
      pixels: { moba: count(colours.moba), dense: count(colours.dense) },
    };
  }, DECODE_COLOURS);
}
