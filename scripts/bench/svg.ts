/**
 * Minimal SVG charts for the benchmark reports (no dependency): a line chart
 * of series over x, and grouped bars.
 *
 * @module
 */

const W = 640, H = 380, L = 70, R = 20, T = 40, B = 60;
const COLORS = ["#d9534f", "#0275d8", "#5cb85c", "#f0ad4e"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
}

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function frame(title: string, xLabel: string, yLabel: string, yMax: number, body: string): string {
  const ticks = Array.from({ length: 6 }, (_, i) => (yMax * i) / 5);
  const y = (v: number) => T + (H - T - B) * (1 - v / yMax);
  const grid = ticks.map((v) =>
    `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>` +
    `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${+v.toFixed(1)}</text>`
  ).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${
    esc(title)
  }</text>
${grid}
<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>
<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>
<text x="${W / 2}" y="${H - 15}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>
<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 16 ${
    (T + H - B) / 2
  })">${esc(yLabel)}</text>
${body}
</svg>
`;
}

function legend(names: string[]): string {
  return names.map((n, i) =>
    `<rect x="${L + 10}" y="${T + 6 + i * 18}" width="12" height="12" fill="${
      COLORS[i % COLORS.length]
    }"/>` +
    `<text x="${L + 28}" y="${T + 16 + i * 18}" font-size="12">${esc(n)}</text>`
  ).join("");
}

/** A line chart with points. */
export function lineChart(o: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: { name: string; points: [number, number][] }[];
}): string {
  const xs = o.series.flatMap((s) => s.points.map((p) => p[0]));
  const xMax = Math.max(...xs),
    yMax = niceMax(Math.max(...o.series.flatMap((s) => s.points.map((p) => p[1]))));
  const x = (v: number) => L + (W - L - R) * (v / xMax);
  const y = (v: number) => T + (H - T - B) * (1 - v / yMax);
  const xticks = [...new Set(xs)].map((v) =>
    `<text x="${x(v)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${v}</text>`
  ).join("");
  const lines = o.series.map((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = s.points.map(([a, b]) => `${x(a)},${y(b)}`).join(" ");
    const dots = s.points.map(([a, b]) =>
      `<circle cx="${x(a)}" cy="${y(b)}" r="4" fill="${c}"/>` +
      `<text x="${x(a)}" y="${y(b) - 8}" text-anchor="middle" font-size="10">${+b.toFixed(
        1,
      )}</text>`
    ).join("");
    return `<polyline points="${pts}" fill="none" stroke="${c}" stroke-width="2"/>${dots}`;
  }).join("");
  return frame(
    o.title,
    o.xLabel,
    o.yLabel,
    yMax,
    xticks + lines + legend(o.series.map((s) => s.name)),
  );
}

/** Grouped bars: one group per category, one bar per series. */
export function barChart(o: {
  title: string;
  yLabel: string;
  categories: string[];
  series: { name: string; values: number[] }[];
}): string {
  const yMax = niceMax(Math.max(...o.series.flatMap((s) => s.values)));
  const y = (v: number) => T + (H - T - B) * (1 - v / yMax);
  const gw = (W - L - R) / o.categories.length;
  const bw = (gw * 0.7) / o.series.length;
  let body = "";
  o.categories.forEach((cat, ci) => {
    const gx = L + ci * gw + gw * 0.15;
    o.series.forEach((s, si) => {
      const v = s.values[ci];
      const bx = gx + si * bw;
      body += `<rect x="${bx}" y="${y(v)}" width="${bw - 2}" height="${H - B - y(v)}" fill="${
        COLORS[si % COLORS.length]
      }"/>`;
      body += `<text x="${bx + bw / 2}" y="${y(v) - 4}" text-anchor="middle" font-size="10">${
        Math.round(v)
      }</text>`;
    });
    body += `<text x="${L + ci * gw + gw / 2}" y="${
      H - B + 16
    }" text-anchor="middle" font-size="12">${esc(cat)}</text>`;
  });
  return frame(o.title, "", o.yLabel, yMax, body + legend(o.series.map((s) => s.name)));
}
