/* test_cli.c: the helpers the subcommands share (server/cmd/cli.c): integer flags, whole-file reads. */
#include "server/cmd/cli.h"
#include "tests/check.h"

#include <limits.h>

static void test_parse_long(void) {
    long v = -7;
    CHECK_EQ_INT(cli_parse_long("--n", "42", 0, 100, &v), 0);
    CHECK_EQ_INT(v, 42);
    CHECK_EQ_INT(cli_parse_long("--n", "-3", -5, 5, &v), 0);
    CHECK_EQ_INT(v, -3);
    CHECK_EQ_INT(cli_parse_long("--n", "0", 0, 0, &v), 0); /* both bounds inclusive */
    CHECK_EQ_INT(v, 0);
    v = 99;
    static const char *bad[] = {"", "x", "12x", "1.5", " ", "101", "-1", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(cli_parse_long("--n", bad[i], 0, 100, &v), -1);
        CHECK_EQ_INT(v, 99); /* untouched on failure */
    }
    CHECK_EQ_INT(cli_parse_long("--n", NULL, 0, 100, &v), -1);
    CHECK_EQ_INT(cli_parse_long("--n", "9223372036854775807", 0, LONG_MAX, &v), 0);
    CHECK(v == LONG_MAX);
}

/* Sizes around the 64 KiB first buffer and its doublings. */
static void test_read_all(void) {
    static const size_t sizes[] = {0, 1, 65535, 65536, 65537, 131072, 300001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        FILE *f = tmpfile();
        CHECK(f != NULL);
        if (!f) return;
        unsigned char *want = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            want[i] = (unsigned char)(i * 2654435761u >> 13);
        CHECK_EQ_INT(fwrite(want, 1, n, f), n);
        rewind(f);
        size_t len = 12345;
        char *got = cli_read_all(f, &len);
        CHECK(got != NULL);
        CHECK_EQ_INT(len, n);
        CHECK(got && !memcmp(got, want, n));
        CHECK(feof(f)); /* read to the end, and the stream stays open */
        CHECK_EQ_INT(fclose(f), 0);
        free(got);
        free(want);
    }
    /* a stream that cannot be read (a directory: fread fails with EISDIR): an error */
    const char *d = getenv("TMPDIR");
    FILE *dir = fopen(d && *d ? d : "/tmp", "r");
    CHECK(dir != NULL);
    if (dir) {
        size_t len = 777;
        CHECK(cli_read_all(dir, &len) == NULL);
        CHECK_EQ_INT(len, 777);
        fclose(dir);
    }
}

int main(void) {
    test_parse_long();
    test_read_all();
    return check_done("test_cli");
}
