/* verify --report: the HTML report. Charts are inline SVG drawn here from the
 * numbers verify measured (no second computation); every chart's <svg> carries
 * data-points, the count of values it plots, and a chart with nothing to plot
 * is a sentence instead of an empty frame. */
#include "report_html.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The models' colours, in command-line order (cycled past ten); the reference
 * is drawn in black. */
static const char *const palette[] = {"#2763b8", "#d4631a", "#2a8a4a", "#b8323a", "#7346b8",
                                      "#8c6d1f", "#1f8a8a", "#c2408f", "#5a6b7d", "#99a800"};
#define REF_COLOR "#222222"

static const char *model_color(int i)
{
    return palette[i % (int)(sizeof palette / sizeof *palette)];
}

/* ---------------------------------------------------------------- text */

static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s && s[1] ? s + 1 : p;
}

/* "548.5 KiB", "1.2 GiB" */
static void fmt_size(char *buf, size_t n, double v)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024 && i < 4) { v /= 1024; i++; }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* ---------------------------------------------------------------- axes */

typedef struct axis {
    const char *label;
    int log;        /* log10 scale (values <= 0 are not drawn) */
    int percent;    /* values are fractions, labelled in %, drawn within 0..100% */
    int tight;      /* linear: the data's range exactly (chunk numbers) */
    double lo, hi;  /* the range drawn (set by axis_fit) */
    double step;    /* linear: tick spacing */
} axis;

static double nice_step(double span)
{
    double raw = span / 5, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
}

/* Fits a's range to the finite values lo..hi (positive ones on a log axis). */
static void axis_fit(axis *a, double lo, double hi)
{
    if (a->log) {
        if (!(lo > 0) || !(hi > 0)) lo = hi = 1;
        a->lo = pow(10, floor(log10(lo)));
        a->hi = pow(10, ceil(log10(hi)));
        if (a->hi <= a->lo) { a->lo /= 10; a->hi *= 10; }
        return;
    }
    if (!isfinite(lo) || !isfinite(hi)) lo = hi = 0;
    if (a->tight && hi > lo) {
        a->lo = lo;
        a->hi = hi;
        a->step = nice_step(hi - lo);
        if (a->step < 1) a->step = 1;
        return;
    }
    double pad = (hi - lo) * 0.05;
    if (pad <= 0) pad = fabs(lo) > 0 ? fabs(lo) * 0.05 : 1;
    lo -= pad;
    hi += pad;
    a->step = nice_step(hi - lo);
    a->lo = floor(lo / a->step) * a->step;
    a->hi = ceil(hi / a->step) * a->step;
    if (a->percent && a->lo < 0) a->lo = 0;
    if (a->percent && a->hi > 1) a->hi = 1;
}

/* v's position in [0, 1] along a */
static double axis_pos(const axis *a, double v)
{
    if (a->log) return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

static int drawable(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

static void tick_label(const axis *a, double v, char *buf, size_t n)
{
    if (a->percent) snprintf(buf, n, "%.4g%%", 100 * v);
    else if (a->log) snprintf(buf, n, "%.0e", v);
    else snprintf(buf, n, "%.6g", fabs(v) < a->step * 1e-6 ? 0.0 : v);
}

/* ---------------------------------------------------------------- charts */

enum { CW = 780, CH = 330, ML = 78, MR = 24, MT = 16, MB = 50 };
#define PW (CW - ML - MR)
#define PH (CH - MT - MB)

typedef struct series {
    const char *label;
    const char *color;
    const double *x, *y;
    int n;
    int dashed;
    int markers;                 /* circles at the points */
    const char *const *names;    /* a label beside each point (NULL: none) */
} series;

static double px_x(const axis *a, double v) { return ML + axis_pos(a, v) * PW; }
static double px_y(const axis *a, double v) { return MT + (1 - axis_pos(a, v)) * PH; }

static void draw_axes(FILE *f, const axis *ax, const axis *ay)
{
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"plot\"/>\n", ML, MT,
            PW, PH);
    char lb[32];
    for (int dim = 0; dim < 2; dim++) {
        const axis *a = dim ? ay : ax;
        double first = a->log ? a->lo : ceil(a->lo / a->step - 1e-9) * a->step;
        for (int k = 0; k < 64; k++) {
            double v = a->log ? a->lo * pow(10, k) : first + k * a->step;
            if (v > a->hi * (1 + 1e-9) + (a->log ? 0 : a->step * 1e-6)) break;
            tick_label(a, v, lb, sizeof lb);
            if (dim == 0) {
                double x = px_x(a, v);
                fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"grid\"/>"
                        "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%s"
                        "</text>\n",
                        x, MT, x, MT + PH, x, MT + PH + 16, lb);
            } else {
                double y = px_y(a, v);
                fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>"
                        "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%s</text>\n",
                        ML, y, ML + PW, y, ML - 6, y + 4, lb);
            }
        }
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"axis\" text-anchor=\"middle\">", ML + PW / 2,
            CH - 10);
    esc(f, ax->label);
    fprintf(f, "</text><text x=\"16\" y=\"%d\" class=\"axis\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 16 %d)\">", MT + PH / 2, MT + PH / 2);
    esc(f, ay->label);
    fputs("</text>\n", f);
}

static void legend(FILE *f, const series *s, int ns)
{
    fputs("<div class=\"legend\">", f);
    for (int i = 0; i < ns; i++) {
        fprintf(f, "<span><i style=\"background:%s\"%s></i>", s[i].color,
                s[i].dashed ? " class=\"dash\"" : "");
        esc(f, s[i].label);
        fputs("</span>", f);
    }
    fputs("</div>\n", f);
}

/* A chart of ns series on axes ax, ay (fitted here to the data); id names it
 * (data-chart). Nothing drawable: the sentence `empty` instead. */
static void chart(FILE *f, const char *id, const char *title, const char *note, axis ax, axis ay,
                  const series *s, int ns, int with_legend, const char *empty)
{
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    long n_points = 0;
    for (int i = 0; i < ns; i++)
        for (int j = 0; j < s[i].n; j++) {
            double x = s[i].x[j], y = s[i].y[j];
            if (!drawable(&ax, x) || !drawable(&ay, y)) continue;
            n_points++;
            xlo = fmin(xlo, x); xhi = fmax(xhi, x);
            ylo = fmin(ylo, y); yhi = fmax(yhi, y);
        }
    fprintf(f, "<section class=\"chart\" id=\"%s\"><h2>", id);
    esc(f, title);
    fputs("</h2>\n", f);
    if (!n_points) {
        fputs("<p class=\"nodata\">", f);
        esc(f, empty);
        fputs("</p></section>\n", f);
        return;
    }
    axis_fit(&ax, xlo, xhi);
    axis_fit(&ay, ylo, yhi);
    fprintf(f, "<svg data-chart=\"%s\" data-points=\"%ld\" viewBox=\"0 0 %d %d\" width=\"%d\" "
            "height=\"%d\" role=\"img\" aria-label=\"", id, n_points, CW, CH, CW, CH);
    esc(f, title);
    fputs("\">\n", f);
    draw_axes(f, &ax, &ay);
    for (int i = 0; i < ns; i++) {
        const series *c = &s[i];
        if (!c->markers) {
            fprintf(f, "<polyline class=\"line%s\" stroke=\"%s\" points=\"",
                    c->dashed ? " dash" : "", c->color);
            for (int j = 0; j < c->n; j++)
                if (drawable(&ax, c->x[j]) && drawable(&ay, c->y[j]))
                    fprintf(f, "%.1f,%.1f ", px_x(&ax, c->x[j]), px_y(&ay, c->y[j]));
            fputs("\"/>\n", f);
            continue;
        }
        for (int j = 0; j < c->n; j++) {
            if (!drawable(&ax, c->x[j]) || !drawable(&ay, c->y[j])) continue;
            double x = px_x(&ax, c->x[j]), y = px_y(&ay, c->y[j]);
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"><title>", x, y,
                    c->color);
            esc(f, c->label);
            fprintf(f, ": %.6g, %.6g</title></circle>", c->x[j], c->y[j]);
            if (c->names && c->names[j]) {
                int right = x > ML + PW - 90;   /* near the right edge: the label goes left */
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"pt\"%s>", x + (right ? -8 : 8),
                        y - 7, right ? " text-anchor=\"end\"" : "");
                esc(f, c->names[j]);
                fputs("</text>", f);
            }
            fputc('\n', f);
        }
    }
    fputs("</svg>\n", f);
    if (with_legend) legend(f, s, ns);
    if (note) {
        fputs("<p class=\"note\">", f);
        esc(f, note);
        fputs("</p>", f);
    }
    fputs("</section>\n", f);
}

/* ---------------------------------------------------------------- tensor errors */

/* "blk.12.attn_v.weight" -> layer 12, kind "attn_v"; "output.weight" -> -1, "output" */
static void split_name(const char *name, int *layer, char *kind, size_t n)
{
    *layer = -1;
    const char *k = name;
    if (!strncmp(name, "blk.", 4)) {
        char *end;
        long l = strtol(name + 4, &end, 10);
        if (end != name + 4 && *end == '.' && l >= 0 && l < 1000000) {
            *layer = (int)l;
            k = end + 1;
        }
    }
    snprintf(kind, n, "%s", k);
    char *w = strstr(kind, ".weight");
    if (w && !w[7]) *w = 0;
}

#define MAX_KINDS 24
#define KIND_LEN (LPK_MAX_NAME + 1)

/* The kinds the models' tensor errors name, the forward pass's order first. */
static int collect_kinds(const report_run *run, char kinds[][KIND_LEN], int *n_layers)
{
    static const char *const order[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                        "ffn_gate", "ffn_up", "ffn_down"};
    int nk = 0;
    *n_layers = 0;
    for (size_t i = 0; i < sizeof order / sizeof *order; i++)
        snprintf(kinds[nk++], KIND_LEN, "%s", order[i]);
    int used[MAX_KINDS] = {0};
    for (int m = 0; m < run->n_models; m++)
        for (size_t t = 0; t < run->models[m].n_te; t++) {
            int layer;
            char kind[LPK_MAX_NAME + 1];
            split_name(run->models[m].te[t].name, &layer, kind, sizeof kind);
            if (layer + 1 > *n_layers) *n_layers = layer + 1;
            int k = 0;
            while (k < nk && strcmp(kinds[k], kind)) k++;
            if (k == nk && nk < MAX_KINDS) snprintf(kinds[nk++], KIND_LEN, "%s", kind);
            if (k < nk) used[k] = 1;
        }
    /* rows nobody has are dropped */
    int out = 0;
    for (int k = 0; k < nk; k++)
        if (used[k]) {
            if (out != k) memcpy(kinds[out], kinds[k], KIND_LEN);
            out++;
        }
    return out;
}

/* t in [0, 1] -> a colour from pale yellow (small error) to dark red */
static void heat_color(double t, char *buf, size_t n)
{
    static const int stops[4][3] = {{255, 245, 200}, {248, 178, 72}, {206, 78, 32}, {104, 18, 10}};
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double p = t * 3;
    int i = p >= 3 ? 2 : (int)p;
    double u = p - i;
    int c[3];
    for (int j = 0; j < 3; j++)
        c[j] = (int)lround(stops[i][j] + (stops[i + 1][j] - stops[i][j]) * u);
    snprintf(buf, n, "#%02x%02x%02x", c[0], c[1], c[2]);
}

/* One heat map per model: rows the tensor kinds, columns the layers (and the
 * tensors outside the blocks), colour the rel. RMSE on a log scale shared by
 * all models. */
static void tensor_maps(FILE *f, const report_run *run)
{
    fputs("<section class=\"chart\" id=\"tensor-errors\"><h2>Per-tensor error by layer and "
          "kind</h2>\n", f);
    int have = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int m = 0; m < run->n_models; m++)
        for (size_t t = 0; run->models[m].te && t < run->models[m].n_te; t++) {
            double v = run->models[m].te[t].rel_rmse;
            if (v > 0 && isfinite(v)) { lo = fmin(lo, v); hi = fmax(hi, v); have = 1; }
        }
    if (!have) {
        fputs("<p class=\"nodata\">No tensor errors: they need --ref, and a model whose "
              "tensors differ in type from the reference's.</p></section>\n", f);
        return;
    }
    char kinds[MAX_KINDS][KIND_LEN];
    int n_layers, nk = collect_kinds(run, kinds, &n_layers);
    /* the tensors outside the blocks: one column each */
    char outer[8][KIND_LEN];
    int no = 0;
    for (int m = 0; m < run->n_models; m++)
        for (size_t t = 0; t < run->models[m].n_te; t++) {
            int layer;
            char kind[LPK_MAX_NAME + 1];
            split_name(run->models[m].te[t].name, &layer, kind, sizeof kind);
            if (layer >= 0) continue;
            int k = 0;
            while (k < no && strcmp(outer[k], kind)) k++;
            if (k == no && no < 8) snprintf(outer[no++], KIND_LEN, "%s", kind);
        }
    /* kinds outside the blocks are columns, not rows */
    int rows = 0;
    for (int k = 0; k < nk; k++) {
        int is_outer = 0;
        for (int o = 0; o < no; o++) is_outer |= !strcmp(kinds[k], outer[o]);
        if (is_outer) continue;
        if (rows != k) memcpy(kinds[rows], kinds[k], KIND_LEN);
        rows++;
    }
    double llo = log10(lo), lhi = log10(hi);
    if (lhi - llo < 1e-9) { llo -= 0.5; lhi += 0.5; }
    int left = 96, top = 26, ch = 18, gap = no ? 24 : 0, outer_w = no ? 110 : 0;
    int cw = n_layers ? (CW - left - 20 - gap - outer_w) / n_layers : 20;
    if (cw > 30) cw = 30;
    if (cw < 4) cw = 4;
    int grid_rows = rows > no ? rows : no > 0 ? no : 1;
    int h = top + grid_rows * ch + 56, lw = 240;
    int svg_w = left + n_layers * cw + gap + outer_w + 16;
    if (svg_w < left + lw + 20) svg_w = left + lw + 20;
    int label_every = cw >= 16 ? 1 : cw >= 8 ? 2 : 5;
    char col[16];
    fputs("<p class=\"note\">Relative RMSE sqrt(&Sigma;(w &minus; w<sub>ref</sub>)&sup2; / "
          "&Sigma;w<sub>ref</sub>&sup2;) of each 2-D tensor against the reference's (both "
          "dequantized), as <code>--tensor-errors</code> reports it; grey: the same type as the "
          "reference (no error). Colour: log scale, shared by all models.</p>\n"
          "<div class=\"maps\">\n", f);
    for (int m = 0; m < run->n_models; m++) {
        const report_model *rm = &run->models[m];
        fprintf(f, "<div><h3><i style=\"background:%s\"></i>", model_color(m));
        esc(f, base_name(rm->path));
        fputs(" (", f);
        esc(f, rm->desc.type);
        fputs(")</h3>\n", f);
        if (!rm->te || !rm->n_te) {
            fputs("<p class=\"nodata\">Every 2-D tensor has the reference's type: no error "
                  "to show.</p></div>\n", f);
            continue;
        }
        long points = 0;
        for (size_t t = 0; t < rm->n_te; t++) points += rm->te[t].rel_rmse > 0;
        if (!points) points = (long)rm->n_te;
        fprintf(f, "<svg data-chart=\"tensor-errors-%d\" data-points=\"%ld\" viewBox=\"0 0 %d %d\" "
                "width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"tensor errors of ", m,
                points, svg_w, h, svg_w, h);
        esc(f, base_name(rm->path));
        fputs("\">\n", f);
        /* row labels, column labels, grey cells */
        for (int r = 0; r < rows; r++) {
            fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"end\">", left - 6,
                    top + r * ch + ch - 5);
            esc(f, kinds[r]);
            fputs("</text>\n", f);
            for (int l = 0; l < n_layers; l++)
                fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"same\"/>",
                        left + l * cw, top + r * ch, cw - 1, ch - 1);
            fputc('\n', f);
        }
        for (int l = 0; l < n_layers; l++)
            if (l % label_every == 0) {
                snprintf(col, sizeof col, "%d", l);
                fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%s"
                        "</text>", left + l * cw + cw / 2.0, top - 6, col);
            }
        /* the tensors outside the blocks: one cell each, stacked right of the grid */
        int ox = left + n_layers * cw + gap, ow = cw > 12 ? cw : 12;
        for (int o = 0; o < no; o++) {
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"same\"/>"
                    "<text x=\"%d\" y=\"%d\" class=\"tick\">", ox, top + o * ch, ow - 1, ch - 1,
                    ox + ow + 5, top + o * ch + ch - 5);
            esc(f, outer[o]);
            fputs("</text>\n", f);
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"axis\">layer</text>\n", left - 44, top - 6);
        /* the measured cells */
        for (size_t t = 0; t < rm->n_te; t++) {
            const vf_tensor_error *e = &rm->te[t];
            int layer, x, y, w = cw, r = 0;
            char kind[LPK_MAX_NAME + 1], color[16];
            split_name(e->name, &layer, kind, sizeof kind);
            if (layer >= 0) {
                while (r < rows && strcmp(kinds[r], kind)) r++;
                if (r == rows) continue;
                x = left + layer * cw;
                y = top + r * ch;
            } else {
                int o = 0;
                while (o < no && strcmp(outer[o], kind)) o++;
                if (o == no) continue;
                x = ox;
                y = top + o * ch;
                w = ow;
            }
            double v = e->rel_rmse;
            heat_color(v > 0 ? (log10(v) - llo) / (lhi - llo) : 0, color, sizeof color);
            const lpk_type_info *ti = lpk_type_get(e->type), *tr = lpk_type_get(e->ref_type);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>",
                    x, y, w - 1, ch - 1, color);
            esc(f, e->name);
            fprintf(f, " %s vs %s: %.6f</title></rect>\n", ti ? ti->name : "?",
                    tr ? tr->name : "?", v);
        }
        /* the colour scale */
        int ly = top + grid_rows * ch + 16;
        for (int i = 0; i < 24; i++) {
            char color[16];
            heat_color(i / 23.0, color, sizeof color);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"10\" fill=\"%s\"/>",
                    left + i * lw / 24, ly, lw / 24 + 1, color);
        }
        fprintf(f, "\n<text x=\"%d\" y=\"%d\" class=\"tick\">%.3g</text>"
                "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">rel. RMSE "
                "(log scale)</text><text x=\"%d\" y=\"%d\" class=\"tick\" "
                "text-anchor=\"end\">%.3g</text>\n",
                left, ly + 24, lo, left + lw / 2, ly + 24, left + lw, ly + 24, hi);
        fputs("</svg></div>\n", f);
    }
    fputs("</div></section>\n", f);
}

/* ---------------------------------------------------------------- the page */

static const char *style =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;"
    "margin:24px auto;max-width:1100px;padding:0 16px;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}"
    "h3{font-size:14px;margin:14px 0 2px;font-weight:600}"
    "table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px}"
    ".wide{overflow-x:auto}.maps{display:flex;flex-wrap:wrap;gap:0 28px}"
    "td,th{padding:4px 6px;border-bottom:1px solid #e3e6ec;text-align:right;white-space:nowrap}"
    "th{background:#f3f5f8;font-weight:600}td.l,th.l{text-align:left}"
    ".meta td{text-align:left;border:0;padding:1px 12px 1px 0}.meta td:first-child{color:#5b6474}"
    ".pass{color:#1d7a3a;font-weight:600}.fail{color:#b3261e;font-weight:700}"
    "i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;"
    "vertical-align:-1px}i.dash{background:repeating-linear-gradient(90deg,#222 0 4px,#fff 4px 7px)"
    "!important}"
    ".legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:13px;margin:2px 0 0 78px}"
    ".note{color:#5b6474;font-size:13px;max-width:780px;margin:4px 0}.nodata{color:#8a4b00}"
    "svg{display:block;font:12px system-ui,sans-serif}"
    "svg .plot{fill:#fbfcfd;stroke:#c9ced8}svg .grid{stroke:#e6e9ef}"
    "svg .tick{fill:#5b6474;font-size:11px}svg .axis{fill:#1d2330;font-size:12px}"
    "svg .pt{fill:#1d2330;font-size:12px;font-weight:600}"
    "svg .line{fill:none;stroke-width:1.8}svg .dash{stroke-dasharray:6 4}"
    "svg .same{fill:#eceef2}";

static void summary_table(FILE *f, const report_run *run)
{
    int ref = run->ref_path != NULL;
    fputs("<section id=\"summary\"><h2>Summary</h2>\n<div class=\"wide\"><table><tr>"
          "<th class=\"l\">model</th>"
          "<th class=\"l\">type</th><th>size</th><th>bpw</th><th>PPL</th>", f);
    if (ref)
        fputs("<th>ref PPL</th><th>PPL ratio</th><th>KLD mean</th><th>KLD p99</th>"
              "<th>same top-1</th>", f);
    fputs("<th>tok/s</th><th class=\"l\">limits</th></tr>\n", f);
    char sz[32];
    for (int m = 0; m < run->n_models; m++) {
        const report_model *rm = &run->models[m];
        const vf_ppl_result *r = &rm->res;
        fmt_size(sz, sizeof sz, (double)rm->desc.file_size);
        fputs("<tr><td class=\"l\" title=\"", f);
        esc(f, rm->path);
        fprintf(f, "\"><i style=\"background:%s\"></i>", model_color(m));
        esc(f, base_name(rm->path));
        fputs("</td><td class=\"l\">", f);
        esc(f, rm->desc.type);
        fprintf(f, "</td><td>%s</td><td>%.2f</td><td>%.4f &plusmn; %.4f</td>", sz, rm->desc.bpw,
                r->ppl, r->ppl_stderr);
        if (ref)
            fprintf(f, "<td>%.4f</td><td>%.5f</td><td>%.6f</td><td>%.6f</td><td>%.3f%%</td>",
                    r->ref_ppl, r->ppl_ratio, r->kld_mean, r->kld_p99, 100 * r->top1_agreement);
        fprintf(f, "<td>%.0f</td>", r->tokens_per_second);
        if (!rm->n_limits) fputs("<td class=\"l\">&ndash;</td>", f);
        else if (!rm->exceeded || !*rm->exceeded) fputs("<td class=\"l pass\">pass</td>", f);
        else {
            fputs("<td class=\"l fail\">FAIL: ", f);
            esc(f, rm->exceeded);
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</table></div>\n", f);
    /* each model after the first against the first, paired on the same positions */
    int said = 0;
    for (int m = 1; m < run->n_models; m++) {
        const vf_ppl_result *r = &run->models[m].res;
        if (!r->has_paired) continue;
        if (!said++) {
            fputs("<p class=\"note\" id=\"paired\">Against ", f);
            esc(f, base_name(run->models[0].path));
            fputs(" on the same positions (mean difference &plusmn; its standard error):", f);
        }
        fputs(said == 1 ? " " : "; ", f);
        esc(f, base_name(run->models[m].path));
        fprintf(f, " KLD %+.3g &plusmn; %.2g", r->kld_diff, r->kld_diff_stderr);
        if (r->kld_diff_stderr > 0) fprintf(f, " (z %+.1f)", r->kld_diff / r->kld_diff_stderr);
        fprintf(f, ", top-1 %+.2f%% &plusmn; %.2f%%", 100 * r->top1_diff,
                100 * r->top1_diff_stderr);
    }
    fputs(said ? ".</p>\n</section>\n" : "</section>\n", f);
}

static void header(FILE *f, const report_run *run)
{
    char sz[32];
    fputs("<h1>llmpack verify</h1>\n<table class=\"meta\">", f);
    fputs("<tr><td>text</td><td>", f);
    esc(f, run->text_path);
    fmt_size(sz, sizeof sz, (double)run->text_bytes);
    fprintf(f, " (%s, %zu tokens)</td></tr>\n", sz, run->n_tokens);
    fprintf(f, "<tr><td>protocol</td><td>%d chunks of %d tokens, positions %d..%d of each scored: "
            "%llu positions per model</td></tr>\n", run->chunks, run->ctx, run->ctx / 2,
            run->ctx - 2, (unsigned long long)run->tokens_scored);
    if (run->kv_f16)
        fputs("<tr><td>attention</td><td>the models' with an f16 KV cache, as llama.cpp's "
              "default (--kv-f16); the reference's in fp32</td></tr>\n", f);
    fputs("<tr><td>reference</td><td>", f);
    if (run->ref_path) {
        fmt_size(sz, sizeof sz, (double)run->ref_desc.file_size);
        esc(f, run->ref_path);
        fputs(" (", f);
        esc(f, run->ref_desc.type);
        fprintf(f, ", %s, %.2f bits/weight)", sz, run->ref_desc.bpw);
    } else {
        fputs("none (no --ref: perplexity only)", f);
    }
    fprintf(f, "</td></tr>\n<tr><td>threads</td><td>%d</td></tr>\n"
            "<tr><td>llmpack</td><td>%s</td></tr></table>\n", run->threads, LPK_VERSION_STRING);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

enum { CDF_POINTS = 300 };

/* Every chart and table into f; LPK_ENOMEM when a buffer could not be had. */
static int write_page(FILE *f, const report_run *run, lpk_error *err)
{
    int nm = run->n_models, ref = run->ref_path != NULL, nc = run->chunks;
    int st = LPK_OK;
    series *s = calloc((size_t)nm + 1, sizeof *s);
    double *xs = malloc(((size_t)nc + 1) * sizeof *xs);
    /* per model: nc values (chunks) or CDF_POINTS (the CDF); x and y */
    size_t per = (size_t)(nc > CDF_POINTS ? nc : CDF_POINTS);
    double *ys = malloc(((size_t)nm + 1) * per * 2 * sizeof *ys);
    char (*labels)[LPK_MAX_NAME + 48] = calloc((size_t)nm, sizeof *labels);
    if (!s || !xs || !ys || !labels) {
        st = lpk_err(err, LPK_ENOMEM, "out of memory for the report");
        goto out;
    }
    /* a file's name, and its type unless the name says it already */
    for (int m = 0; m < nm; m++) {
        const char *b = base_name(run->models[m].path), *t = run->models[m].desc.type;
        if (strcasestr(b, t)) snprintf(labels[m], sizeof labels[m], "%s", b);
        else snprintf(labels[m], sizeof labels[m], "%s (%s)", b, t);
    }

    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width\">"
          "<title>llmpack verify report</title><style>", f);
    fputs(style, f);
    fputs("</style></head><body>\n", f);
    header(f, run);
    summary_table(f, run);

    /* size against KLD: one point per model */
    {
        double *x = ys, *y = ys + nm;
        const char **names = calloc((size_t)nm, sizeof *names);
        if (!names) {
            st = lpk_err(err, LPK_ENOMEM, "out of memory for the report");
            goto out;
        }
        for (int m = 0; m < nm; m++) {
            x[m] = (double)run->models[m].desc.file_size / (1024.0 * 1024.0);
            y[m] = ref ? run->models[m].res.kld_mean : NAN;
            names[m] = run->models[m].desc.type;
            s[m] = (series){labels[m], model_color(m), &x[m], &y[m], 1, 0, 1, &names[m]};
        }
        axis ax = {.label = "file size (MiB)"}, ay = {.label = "KLD mean (log scale)", .log = 1};
        chart(f, "size-kld", "Size against KL divergence",
              "Each model's file size and mean KL(P_ref || P_model) over every scored position: "
              "lower left is better. A model identical to the reference (KLD 0) has no point "
              "on the log scale.", ax, ay, s, nm, 1,
              ref ? "No model has a KLD above 0: each model's distributions are the reference's."
                  : "KL divergence needs --ref.");
        free(names);
    }

    /* PPL per chunk: the reference (dashed) and each model */
    for (int c = 0; c < nc; c++) xs[c] = c + 1;
    int ns = 0;
    for (int m = 0; m < nm; m++) {
        double *y = ys + (size_t)m * per;
        for (int c = 0; c < nc; c++) y[c] = run->models[m].chunks[c].ppl;
        s[ns++] = (series){labels[m], model_color(m), xs, y, nc, 0, 0, NULL};
    }
    if (ref && nm) {
        double *y = ys + (size_t)nm * per;
        for (int c = 0; c < nc; c++) y[c] = run->models[0].chunks[c].ref_ppl;
        s[ns++] = (series){"reference", REF_COLOR, xs, y, nc, 1, 0, NULL};
    }
    {
        axis ax = {.label = "chunk", .tight = 1}, ay = {.label = "perplexity"};
        chart(f, "ppl-chunks", "Perplexity per chunk", "exp(mean NLL) over each chunk's scored "
              "positions.", ax, ay, s, ns, 1, "No chunk was scored.");
    }

    /* KLD distribution: the CDF over positions, log x */
    ns = 0;
    if (ref) {
        float floor_v = INFINITY;
        for (int m = 0; m < nm && !st; m++) {
            const report_model *rm = &run->models[m];
            size_t n = rm->n_kld;
            double *x = ys + (size_t)m * per * 2, *y = x + per;
            float *sorted = n ? malloc(n * sizeof *sorted) : NULL;
            if (n && !sorted) {
                st = lpk_err(err, LPK_ENOMEM, "out of memory for the report");
                break;
            }
            if (n) memcpy(sorted, rm->kld, n * sizeof *sorted);
            if (n) qsort(sorted, n, sizeof *sorted, cmp_float);
            int np = n < CDF_POINTS ? (int)n : CDF_POINTS;
            for (int k = 0; k < np; k++) {
                size_t idx = np > 1 ? (size_t)llround((double)k * (double)(n - 1) / (np - 1)) : 0;
                x[k] = sorted[idx];
                y[k] = (double)(idx + 1) / (double)n;
            }
            /* the drawn floor: the first percentile's decade, over all models */
            if (n) {
                float p1 = sorted[n / 100];
                if (p1 > 0 && p1 < floor_v) floor_v = p1;
            }
            free(sorted);
            s[ns++] = (series){labels[m], model_color(m), x, y, np, 0, 0, NULL};
        }
        if (!st && isfinite(floor_v)) {
            double fl = pow(10, floor(log10(floor_v)));
            for (int i = 0; i < ns; i++)
                for (int k = 0; k < s[i].n; k++)
                    if (!(s[i].x[k] >= fl)) ((double *)s[i].x)[k] = fl;
        }
    }
    if (st) goto out;
    {
        axis ax = {.label = "KL divergence per position (log scale)", .log = 1},
             ay = {.label = "fraction of positions", .percent = 1};
        chart(f, "kld-cdf", "KL divergence distribution",
              "Cumulative distribution of KL(P_ref || P_model) over the scored positions: the "
              "further left a curve rises, the closer the model is to the reference. Values "
              "below the axis's left end are drawn at it.", ax, ay, s, ns, 1,
              ref ? "Every position's KLD is 0: each model's distributions are the reference's."
                  : "KL divergence needs --ref.");
    }

    /* top-1 agreement per chunk */
    ns = 0;
    for (int m = 0; ref && m < nm; m++) {
        double *y = ys + (size_t)m * per;
        for (int c = 0; c < nc; c++) y[c] = run->models[m].chunks[c].top1_agreement;
        s[ns++] = (series){labels[m], model_color(m), xs, y, nc, 0, 0, NULL};
    }
    {
        axis ax = {.label = "chunk", .tight = 1}, ay = {.label = "same top-1 token", .percent = 1};
        chart(f, "top1-chunks", "Top-1 agreement per chunk",
              "Share of each chunk's scored positions where the model's most likely next token "
              "is the reference's.", ax, ay, s, ns, 1, "Top-1 agreement needs --ref.");
    }

    tensor_maps(f, run);
    fputs("<p class=\"note\">Written by <code>llmpack verify --report</code>; the numbers are "
          "those of <code>llmpack verify --json</code> for the same run (docs/VERIFY.md).</p>\n"
          "</body></html>\n", f);
out:
    free(s);
    free(xs);
    free(ys);
    free(labels);
    return st;
}

int report_html_write(const char *out, const report_run *run, unsigned flags, lpk_error *err)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", out);
    int st = write_page(f, run, err);
    if (fclose(f) && !st) st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", out);
    if (!st) st = lpk_file_write(out, buf, n, flags, err);
    free(buf);
    return st;
}
