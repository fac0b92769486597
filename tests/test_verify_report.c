/* verify --report: one self-contained HTML file (no script, no external
 * resource) whose numbers are the run's, whose every chart has data, written
 * through a temporary file like every output; rendered by headless Chromium
 * without a console message (skipped, saying so, where chromium is absent). */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#define TEXT "examples/TinyStories-valid-sample.txt"

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what)) n++;
    return n;
}

/* data-points of the chart named id (data-chart="id"), or -1 if absent */
static long chart_points(const char *html, const char *id)
{
    char key[128];
    snprintf(key, sizeof key, "data-chart=\"%s\" data-points=\"", id);
    const char *p = strstr(html, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* Every <svg> has data-points > 0; returns how many there are. */
static int every_chart_has_data(const char *html, const char *what)
{
    int n = 0;
    for (const char *p = strstr(html, "<svg"); p; p = strstr(p + 1, "<svg")) {
        const char *end = strchr(p, '>'), *dp = strstr(p, "data-points=\"");
        if (!end || !dp || dp > end) fail_msg("%s: an <svg> without data-points", what);
        long v = strtol(dp + 13, NULL, 10);
        if (v <= 0) fail_msg("%s: an <svg> with data-points=%ld: %.120s", what, v, p);
        n++;
    }
    return n;
}

/* Nothing the page would fetch or run, and no number that is not one. */
static void self_contained(const char *html, const char *what)
{
    static const char *const banned[] = {"<script", "http://", "https://", " src=", "<link",
                                         "url(", "@import", "<iframe", "<object", "<img",
                                         "\"nan", "\"-nan", "\"inf", "\"-inf", "nan,", "inf,"};
    if (strncmp(html, "<!DOCTYPE html>", 15)) fail_msg("%s: not an HTML document", what);
    for (size_t i = 0; i < sizeof banned / sizeof *banned; i++)
        if (strstr(html, banned[i])) fail_msg("%s contains \"%s\"", what, banned[i]);
    if (!strstr(html, "</html>")) fail_msg("%s: cut short", what);
}

/* The report at path (malloc'ed): self-contained, n_charts charts, each with data. */
static char *read_report(const char *path, int n_charts)
{
    char *html = tu_read_file(path, NULL);
    if (!html) fail_msg("%s: no report", path);
    self_contained(html, path);
    assert_int_equal(every_chart_has_data(html, path), n_charts);
    return html;
}

static double jnum(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v)) fail_msg("%s is not a number", k);
    return json_number_value(v);
}

/* The demo model against its q8_0 and q4_k_m: the charts, their counts, the
 * numbers of --json in the table, the rules every output follows. */
static void test_report_demo(void **state)
{
    (void)state;
    const char *m = tu_demo("m.lpk", "");
    char *dir = tu_tmpdir(), *out = NULL;
    char *q8 = tu_fmt("%s/q8_0.lpk", dir), *q4 = tu_fmt("%s/q4_k_m.lpk", dir);
    char *rep = tu_fmt("%s/r.html", dir);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q8_0 -q", m, q8), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_k_m -q", m, q4), 0);
    free(out);
    char *args = tu_fmt("verify '%s' '%s' --ref '%s' -f %s -c 128 --chunks 6 --report '%s' "
                        "--max-kld 0.01 --json", q8, q4, m, TEXT, rep);
    /* q4_k_m is over the limit: exit 4, the report is still written */
    int rc = tu_llmpack(&out, "%s", args);
    assert_int_equal(rc, 4);
    json_error_t je;
    json_t *j = json_loads(strchr(out, '{'), 0, &je);
    assert_non_null(j);
    free(out);
    char *html = read_report(rep, 6);
    /* each chart plots what the run measured: 6 chunks, 2 models + reference */
    assert_int_equal(chart_points(html, "size-kld"), 2);
    assert_int_equal(chart_points(html, "ppl-chunks"), 6 * 3);
    assert_int_equal(chart_points(html, "top1-chunks"), 6 * 2);
    /* the CDF: up to 300 points a model (6 x 63 positions scored) */
    assert_int_equal(chart_points(html, "kld-cdf"), 2 * 300);
    assert_true(chart_points(html, "tensor-errors-0") > 0);   /* without --tensor-errors */
    assert_true(chart_points(html, "tensor-errors-1") > 0);
    /* the table's numbers are --json's; the tensor errors computed for the
     * report are not listed there without --tensor-errors */
    json_t *res = json_object_get(j, "results");
    assert_true(json_is_null(json_object_get(json_array_get(res, 0), "tensor_errors")));
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(res, i);
        char *cell = tu_fmt("<td>%.4f &plusmn;", jnum(r, "ppl"));
        char *kld = tu_fmt("<td>%.6f</td>", jnum(r, "kld_mean"));
        char *top = tu_fmt("<td>%.3f%%</td>", 100 * jnum(r, "top1_agreement"));
        if (!strstr(html, cell) || !strstr(html, kld) || !strstr(html, top))
            fail_msg("result %zu: %s / %s / %s not in the report", i, cell, kld, top);
        free(cell); free(kld); free(top);
    }
    /* the second model against the first, paired: --json's vs_first */
    json_t *vs = json_object_get(json_array_get(res, 1), "vs_first");
    char *pair = tu_fmt("q4_k_m.lpk KLD %+.3g &plusmn; %.2g (z %+.1f), top-1 %+.2f%% &plusmn; "
                        "%.2f%%.</p>", jnum(vs, "kld_mean_diff"), jnum(vs, "kld_mean_diff_stderr"),
                        jnum(vs, "kld_mean_diff") / jnum(vs, "kld_mean_diff_stderr"),
                        100 * jnum(vs, "top1_agreement_diff"),
                        100 * jnum(vs, "top1_agreement_diff_stderr"));
    if (!strstr(html, "<p class=\"note\" id=\"paired\">Against q8_0.lpk ") || !strstr(html, pair))
        fail_msg("no paired note \"%s\" in the report", pair);
    free(pair);
    assert_int_equal(count(html, "class=\"l pass\">pass<"), 1);
    assert_int_equal(count(html, "class=\"l fail\">FAIL: max-kld<"), 1);
    assert_non_null(strstr(html, "Q4_K_M"));
    assert_int_equal(tu_dir_entries(dir, 1), 0);   /* no temporary file left */
    json_decref(j);

    /* an existing report: kept, exit 1, before anything runs; --force replaces it */
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f %s -c 128 --chunks 2 --report '%s'",
                                q8, m, TEXT, rep), 1);
    assert_non_null(strstr(out, "already exists"));
    assert_null(strstr(out, "PPL"));
    free(out);
    char *again = tu_read_file(rep, NULL);
    assert_string_equal(again, html);
    free(again);
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f %s -c 128 --chunks 2 --report '%s' "
                                "--force", q8, m, TEXT, rep), 0);
    assert_non_null(strstr(out, "report: "));
    free(out);
    again = tu_read_file(rep, NULL);
    assert_int_equal(chart_points(again, "ppl-chunks"), 2 * 2);
    free(again);
    /* a folder is no report path: a usage error before the run */
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f %s -c 128 --report '%s'", q8, TEXT, dir), 2);
    assert_non_null(strstr(out, "is a folder"));
    free(out);

    /* without --ref: perplexity only; the charts that need it say so */
    char *r2 = tu_fmt("%s/noref.html", dir);
    assert_int_equal(tu_llmpack(&out, "verify '%s' -f %s -c 128 --chunks 3 --report '%s' -q", q8,
                                TEXT, r2), 0);
    free(out);
    char *h2 = read_report(r2, 1);
    assert_int_equal(chart_points(h2, "ppl-chunks"), 3);
    assert_int_equal(count(h2, "needs --ref"), 3);
    free(h2);
    /* a model against itself: KLD 0 everywhere, nothing on a log scale, said so */
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f %s -c 128 --chunks 2 --report '%s' "
                                "--force -q", m, m, TEXT, r2), 0);
    free(out);
    h2 = read_report(r2, 2);   /* PPL and top-1 per chunk */
    assert_int_equal(count(h2, "each model&#39;s distributions are the reference&#39;s"), 2);
    assert_int_equal(count(h2, "No tensor errors: "), 1);
    assert_int_equal(chart_points(h2, "top1-chunks"), 2);
    free(h2);
    free(r2);
    free(html);
    free(args);
    free(q8); free(q4); free(rep);
    tu_rmtree(dir);
    free(dir);
}

/* chromium on PATH, else NULL after printing why */
static const char *chromium(void)
{
    if (system("command -v chromium > /dev/null 2>&1") == 0) return "chromium";
    print_message("SKIP: chromium not found (Debian package chromium, installed by "
                  "scripts/deps-debian.sh): the report is not rendered\n");
    return NULL;
}

/* Chromium's log of loading html_path (malloc'ed): stderr of --dump-dom with
 * logging on; the DOM it built in dir/dom.html. */
static char *chromium_log(const char *chrome, const char *html_path, const char *dir)
{
    char *dom = tu_fmt("%s/dom.html", dir), *log = tu_fmt("%s/chromium.log", dir);
    char *profile = tu_fmt("%s/profile", dir);
    char *cmd = tu_fmt("timeout 120 %s --headless --disable-gpu --no-sandbox "
                       "--user-data-dir='%s' --enable-logging=stderr --v=0 --dump-dom "
                       "'file://%s' > '%s' 2> '%s'", chrome, profile, html_path, dom, log);
    int rc = system(cmd);
    char *lg = tu_read_file(log, NULL);
    if (rc != 0) fail_msg("%s: exit %d: %s", cmd, rc, lg ? lg : "");
    free(cmd); free(dom); free(log); free(profile);
    return lg ? lg : strdup("");
}

/* Renders html_path in headless Chromium: no console message (the page has no
 * script, so any message is an error: a blocked resource, a parse failure),
 * and the DOM it built holds every chart with its data; a screenshot is made. */
static void render(const char *chrome, const char *html_path, const char *dir)
{
    char *lg = chromium_log(chrome, html_path, dir);
    char *dom = tu_fmt("%s/dom.html", dir), *png = tu_fmt("%s/shot.png", dir);
    char *profile = tu_fmt("%s/profile", dir);
    char *d = tu_read_file(dom, NULL);
    assert_non_null(d);
    if (strstr(lg, ":CONSOLE")) fail_msg("%s: console messages:\n%s", html_path, lg);
    char *file = tu_read_file(html_path, NULL);
    int n = every_chart_has_data(file, html_path);
    assert_int_equal(every_chart_has_data(d, "the rendered DOM"), n);
    assert_true(count(d, "<polyline") + count(d, "<circle") + count(d, "fill=\"#") > n);
    free(file);
    char *cmd = tu_fmt("timeout 120 %s --headless --disable-gpu --no-sandbox --user-data-dir='%s' "
                       "--hide-scrollbars --window-size=1200,1600 --screenshot='%s' "
                       "'file://%s' > /dev/null 2>&1", chrome, profile, png, html_path);
    assert_int_equal(system(cmd), 0);
    size_t np = 0;
    char *p = tu_read_file(png, &np);
    if (!p || np < 1000 || memcmp(p, "\x89PNG", 4)) fail_msg("%s: no screenshot", png);
    free(p);
    free(lg); free(d); free(cmd); free(dom); free(png); free(profile);
}

static char *abs_path(const char *p)
{
    char *r = realpath(p, NULL);
    assert_non_null(r);
    return r;
}

static void test_report_chromium(void **state)
{
    (void)state;
    const char *chrome = chromium();
    if (!chrome) skip();
    const char *m = tu_demo("m.lpk", "");
    char *dir = tu_tmpdir(), *out = NULL;
    /* the check itself: a page that does log an error is seen to */
    char *bad = tu_fmt("%s/bad.html", dir);
    const char *bad_page = "<!DOCTYPE html><html><body><p>x</p><script>console.error("
                           "'report check'); no_such_function();</script></body></html>\n";
    assert_int_equal(tu_write_file(bad, bad_page, strlen(bad_page)), 0);
    char *lg = chromium_log(chrome, bad, dir);
    if (!strstr(lg, ":CONSOLE") || !strstr(lg, "no_such_function"))
        fail_msg("chromium's log does not show a page's console errors:\n%s", lg);
    free(lg);
    free(bad);
    char *q = tu_fmt("%s/q.lpk", dir), *rep = tu_fmt("%s/r.html", dir);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 -q", m, q), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' -f %s -c 128 --chunks 4 "
                                "--report '%s' -q", q, m, TEXT, rep), 0);
    free(out);
    char *a = abs_path(rep);
    render(chrome, a, dir);
    free(a);

    /* a real model: llama.cpp's Q8_0 and Q4_K_M of llama2-20m against its bf16 */
    const char *hf = tu_shared("models/llama2-20m/hf");
    const char *g8 = hf ? tu_shared_dup("gguf/llama2-20m-Q8_0.gguf") : NULL;
    const char *g4 = g8 ? tu_shared_dup("gguf/llama2-20m-Q4_K_M.gguf") : NULL;
    const char *docs = g4 ? tu_shared("text/docs-valid.txt") : NULL;
    if (docs) {
        char *l = tu_fmt("%s/l.lpk", dir), *r2 = tu_fmt("%s/l20.html", dir);
        char *hf_dup = tu_shared_dup("models/llama2-20m/hf");
        char *docs_dup = tu_shared_dup("text/docs-valid.txt");
        assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' -q", hf_dup, l), 0);
        free(out);
        assert_int_equal(tu_llmpack(&out, "verify '%s' '%s' --ref '%s' -f '%s' -c 512 --chunks 2 "
                                    "--report '%s' -q", g8, g4, l, docs_dup, r2), 0);
        free(out);
        free(read_report(r2, 6));
        a = abs_path(r2);
        render(chrome, a, dir);
        free(a);
        free(l); free(r2); free(hf_dup); free(docs_dup);
    } else {
        print_message("NOTE: ../shared's llama2-20m or its GGUFs not found: only the demo "
                      "model's report is rendered\n");
    }
    free((char *)g8);
    free((char *)g4);
    free(q); free(rep);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_demo),
        cmocka_unit_test(test_report_chromium),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
