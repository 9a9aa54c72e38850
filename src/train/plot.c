/* plot.c — the loss curve of a training run as a self-contained SVG file (no dependencies, no fonts to
 * install: any browser or image viewer shows it).
 *
 * One chart: training loss per step as a polyline, evaluation losses as dots, a frame with ticks at
 * "nice" values (1, 2 or 5 times a power of ten) and their labels, axis titles, a legend and a title.
 * Not a plotting library: one fixed layout, linear axes. The one convention: data coordinates map to
 * the plot box [L, L+W] x [T, T+H] with y growing downwards, so a higher loss is nearer the top.
 */
#include <math.h>
#include <stdio.h>

#include "core/core_int.h"
#include "qkv/train.h"

enum { SVG_W = 800, SVG_H = 480, PAD_L = 72, PAD_R = 24, PAD_T = 48, PAD_B = 56 };

/* A tick spacing of 1, 2 or 5 times a power of ten giving about `want` intervals over span. */
static double nice_step(double span, int want) {
    if (!(span > 0)) return 1;
    double raw = span / want, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A tick label: integers without a fraction, others with as few digits as the spacing needs. */
static void tick_label(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-9) v = 0;
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    snprintf(buf, n, "%.*f", dec, v);
}

/* What the drawing needs: the data and the frame's data ranges. */
typedef struct {
    const char *title;
    const int64_t *steps, *eval_steps;
    const float *losses, *eval_losses;
    int64_t n_train, n_eval;
    double x0, x1, xstep, y0, y1, ystep;
} chart;

static int draw_chart(FILE *f, const void *arg) {
    const chart *ch = arg;
    const char *title = ch->title;
    const int64_t *steps = ch->steps, *eval_steps = ch->eval_steps, n_train = ch->n_train, n_eval = ch->n_eval;
    const float *losses = ch->losses, *eval_losses = ch->eval_losses;
    const double x0 = ch->x0, x1 = ch->x1, xstep = ch->xstep, y0 = ch->y0, y1 = ch->y1, ystep = ch->ystep;
    const double L = PAD_L, T = PAD_T, W = SVG_W - PAD_L - PAD_R, H = SVG_H - PAD_T - PAD_B;
#define PX(x) (L + ((x) - x0) / (x1 - x0) * W)
#define PY(y) (T + (y1 - (y)) / (y1 - y0) * H)
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", SVG_W, SVG_H, SVG_W, SVG_H);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", SVG_W, SVG_H);
    fprintf(f, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", SVG_W / 2);
    xml_text(f, title ? title : "training loss");
    fprintf(f, "</text>\n");

    /* grid, ticks and labels */
    fprintf(f, "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n");
    for (double y = y0; y <= y1 + ystep * 1e-6; y += ystep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, PY(y), L + W, PY(y));
    for (double x = x0; x <= x1 + xstep * 1e-6; x += xstep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", PX(x), T, PX(x), T + H);
    fprintf(f, "</g>\n<g class=\"yticks\" text-anchor=\"end\">\n");
    char lab[64];
    for (double y = y0; y <= y1 + ystep * 1e-6; y += ystep) {
        tick_label(lab, sizeof lab, y, ystep);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>", L - 5, PY(y), L, PY(y));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L - 8, PY(y) + 4, lab);
    }
    fprintf(f, "</g>\n<g class=\"xticks\" text-anchor=\"middle\">\n");
    for (double x = x0; x <= x1 + xstep * 1e-6; x += xstep) {
        tick_label(lab, sizeof lab, x, xstep);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>", PX(x), T + H, PX(x),
                T + H + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", PX(x), T + H + 19, lab);
    }
    fprintf(f, "</g>\n");
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n", L, T, W, H);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">step</text>\n", L + W / 2, SVG_H - 12);
    fprintf(f, "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">loss (cross-entropy, nats)</text>\n",
            T + H / 2, T + H / 2);

    /* the training curve: one point per finite logged loss */
    fprintf(f, "<polyline class=\"train\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    int64_t k = 0;
    for (int64_t i = 0; i < n_train; i++)
        if (isfinite(losses[i])) fprintf(f, "%s%.2f,%.2f", k++ ? " " : "", PX((double)steps[i]), PY(losses[i]));
    fprintf(f, "\"/>\n<g class=\"eval\" fill=\"#d62728\">\n");
    for (int64_t i = 0; i < n_eval; i++)
        if (isfinite(eval_losses[i]))
            fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\"/>\n", PX((double)eval_steps[i]), PY(eval_losses[i]));
    fprintf(f, "</g>\n");
    /* legend, top right inside the frame */
    double lx = L + W - 150, ly = T + 14;
    fprintf(f, "<g class=\"legend\"><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
               "<text x=\"%.1f\" y=\"%.1f\">train loss</text>", lx, ly, lx + 24, ly, lx + 30, ly + 4);
    if (n_eval > 0)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d62728\"/><text x=\"%.1f\" y=\"%.1f\">eval loss</text>",
                lx + 12, ly + 18, lx + 30, ly + 22);
    fprintf(f, "</g>\n</svg>\n");
#undef PX
#undef PY
    return ferror(f) ? -1 : 0;
}

qkv_status qkv_plot_loss_svg(const char *path, const char *title, const int64_t *steps, const float *losses,
                             int64_t n_train, const int64_t *eval_steps, const float *eval_losses, int64_t n_eval) {
    if (!path || n_train < 0 || n_eval < 0 || (n_train && (!steps || !losses)) || (n_eval && (!eval_steps || !eval_losses)))
        return qkv__set_error(QKV_ERR_ARG, "qkv_plot_loss_svg: bad arguments");
    /* data ranges over the finite points */
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int64_t i = 0; i < n_train; i++)
        if (isfinite(losses[i])) {
            x0 = fmin(x0, (double)steps[i]), x1 = fmax(x1, (double)steps[i]);
            y0 = fmin(y0, losses[i]), y1 = fmax(y1, losses[i]);
        }
    for (int64_t i = 0; i < n_eval; i++)
        if (isfinite(eval_losses[i])) {
            x0 = fmin(x0, (double)eval_steps[i]), x1 = fmax(x1, (double)eval_steps[i]);
            y0 = fmin(y0, eval_losses[i]), y1 = fmax(y1, eval_losses[i]);
        }
    if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1; /* nothing to draw: an empty frame */
    if (x0 > 0) x0 = 0;
    if (x1 - x0 < 1) x1 = x0 + 1;
    double ystep = nice_step(y1 - y0 > 0 ? y1 - y0 : fabs(y0) + 1, 5);
    y0 = floor(y0 / ystep) * ystep;
    y1 = ceil(y1 / ystep) * ystep;
    if (y1 - y0 < ystep) y1 = y0 + ystep;
    double xstep = nice_step(x1 - x0, 8);
    x1 = ceil(x1 / xstep) * xstep;

    chart ch = {title, steps, eval_steps, losses, eval_losses, n_train, n_eval, x0, x1, xstep, y0, y1, ystep};
    return qkv__write_file_atomic(path, draw_chart, &ch);
}
