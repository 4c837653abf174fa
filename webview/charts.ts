// chart.js setup shared by the views: only the pieces we use are registered (smaller bundle),
// animation off (live updates and screenshots show the final state), colours from the theme.

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  ScatterController,
  Title,
  Tooltip,
  type ChartConfiguration,
} from 'chart.js';

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  ScatterController,
  Title,
  Tooltip,
);

/** A VS Code theme colour (CSS variable) with a fallback for when the variable is missing. */
export function themeColor(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || fallback;
}

export const palette = () => ({
  fg: themeColor('--vscode-foreground', '#cccccc'),
  grid: themeColor('--vscode-editorWidget-border', 'rgba(128,128,128,0.3)'),
  blue: themeColor('--vscode-charts-blue', '#3794ff'),
  red: themeColor('--vscode-charts-red', '#f14c4c'),
  green: themeColor('--vscode-charts-green', '#89d185'),
  orange: themeColor('--vscode-charts-orange', '#d18616'),
  purple: themeColor('--vscode-charts-purple', '#b180d7'),
  yellow: themeColor('--vscode-charts-yellow', '#cca700'),
});

export function makeChart(canvas: HTMLCanvasElement, config: ChartConfiguration): Chart {
  const p = palette();
  Chart.defaults.color = p.fg;
  Chart.defaults.borderColor = p.grid;
  Chart.defaults.font.family = themeColor('--vscode-font-family', 'sans-serif');
  config.options = { animation: false, responsive: true, maintainAspectRatio: false, ...config.options };
  return new Chart(canvas, config);
}

/** Viridis-like colour for t in [0, 1] (perceptually ordered, readable on dark and light themes). */
export function heatColor(t: number): string {
  const stops = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ];
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** Text colour that stays readable on heatColor(t). */
export const heatTextColor = (t: number): string => (t > 0.6 ? '#111' : '#f5f5f5');

/** Diverging blue – neutral – red for t in [0, 1] (0.5 = no change), for differences between runs. */
export function divergingColor(t: number): string {
  const x = Math.min(1, Math.max(0, t));
  const [lo, mid, hi] = [
    [33, 102, 172],
    [120, 120, 120],
    [178, 24, 43],
  ];
  const [a, b, f] = x < 0.5 ? [lo, mid, x / 0.5] : [mid, hi, (x - 0.5) / 0.5];
  const c = a.map((v, k) => Math.round(v + (b[k] - v) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}
