"""The figure of `python -m procstart --plot FILE` (the `procstart[plot]` extra, matplotlib):
one panel per measurement, a row per start method with procstart's bar beside stdlib's, and the
ratio procstart/stdlib on the right, green where procstart is better, red where worse. Imported only for --plot.

Built on matplotlib's Figure rather than pyplot: the file's suffix picks a non-interactive
backend (Agg for PNG, SVG, PDF) and no GUI toolkit is ever looked for.
"""

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

COLORS = {'procstart': '#d9541e', 'stdlib': '#4c78a8'}
# The ratio's colour: better, worse, or within NOISE of 1 (the README's runs move by more).
BETTER, WORSE, SAME = '#1a7f37', '#cf222e', '#6e7781'
NOISE = 0.05
BAR = 0.38


def draw(path, title, panels):
    """Write the figure to `path`. A panel is a dict: title, axis (its label), format (of a
    value), lower_is_better, and rows, each a dict of label, values ({library: value}) and
    optionally p90 ({library: value}, drawn as a whisker)."""
    rows = [len(panel['rows']) for panel in panels]
    # Inches: per row, per panel (its title and axis), and for the figure's title and legend.
    fig = Figure(figsize=(10, 0.45 * sum(rows) + 1.1 * len(panels) + 1.2), layout='constrained')
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={'height_ratios': rows})[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        _panel(ax, panel)
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc='outside lower center', ncols=len(COLORS))
    # Text stays text in an SVG (not glyph outlines): searchable, selectable and smaller.
    with rc_context({'svg.fonttype': 'none'}):
        fig.savefig(path)


def _panel(ax, panel):
    rows = panel['rows']
    whiskers = all('p90' in row for row in rows)
    for k, library in enumerate(COLORS):
        values = [row['values'][library] for row in rows]
        error = None
        if whiskers:
            error = [[0] * len(rows), [row['p90'][library] - row['values'][library] for row in rows]]
        bars = ax.barh(
            [i + (k - 0.5) * BAR for i in range(len(rows))],
            values,
            BAR,
            xerr=error,
            color=COLORS[library],
            label=library,
            error_kw={'elinewidth': 0.8, 'capsize': 2, 'ecolor': '#444444'},
        )
        ax.bar_label(bars, [panel['format'].format(v) for v in values], padding=3, fontsize=8)
    # Log scale: a panel holds rows a factor 40 apart (fork from a small and from a 2 GiB parent).
    ax.set_xscale('log')
    ax.xaxis.set_major_formatter('{x:g}')
    ax.xaxis.set_minor_formatter(NullFormatter())
    ends = [max(row.get('p90', row['values']).values()) for row in rows]
    starts = [min(row['values'].values()) for row in rows]
    # Room left of the shortest bar, and right of the longest for its value label.
    ax.set_xlim(min(starts) / 2, max(ends) * 5)
    ax.set_yticks(range(len(rows)), [row['label'] for row in rows])
    ax.invert_yaxis()
    ax.set_title(panel['title'], loc='left', fontsize=11)
    ax.set_xlabel(panel['axis'], fontsize=9)
    ax.grid(axis='x', which='major', alpha=0.3)
    ax.text(1.01, 1.0, 'procstart\n/ stdlib', transform=ax.transAxes, va='bottom', fontsize=8)
    for i, row in enumerate(rows):
        ratio = row['values']['procstart'] / row['values']['stdlib']
        gain = 1 / ratio if panel['lower_is_better'] else ratio
        ax.text(
            1.01,
            i,
            f'{ratio:.2f}×',
            transform=ax.get_yaxis_transform(),
            va='center',
            fontweight='bold',
            color=SAME if abs(gain - 1) < NOISE else BETTER if gain > 1 else WORSE,
        )
