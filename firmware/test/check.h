// A very small test harness for the host tests: CHECK keeps going and counts failures.
#ifndef HAND_TEST_CHECK_H
#define HAND_TEST_CHECK_H

#include <stdio.h>

static int check_failures = 0;
static int check_count = 0;
static const char *check_context = "";

#define CHECK(cond)                                                                     \
    do {                                                                                \
        ++check_count;                                                                  \
        if (!(cond)) {                                                                  \
            ++check_failures;                                                           \
            if (check_failures <= 50)                                                   \
                fprintf(stderr, "FAIL %s:%d [%s]: %s\n", __FILE__, __LINE__, check_context, \
                        #cond);                                                         \
        }                                                                               \
    } while (0)

#define CHECK_EQ(a, b)                                                                     \
    do {                                                                                   \
        ++check_count;                                                                     \
        const long check_a_ = (long)(a), check_b_ = (long)(b);                             \
        if (check_a_ != check_b_) {                                                        \
            ++check_failures;                                                              \
            if (check_failures <= 50)                                                      \
                fprintf(stderr, "FAIL %s:%d [%s]: %s == %s (%ld != %ld)\n", __FILE__,      \
                        __LINE__, check_context, #a, #b, check_a_, check_b_);              \
        }                                                                                  \
    } while (0)

static int check_report(const char *suite) {
    if (check_failures) {
        fprintf(stderr, "%s: %d of %d checks failed\n", suite, check_failures, check_count);
        return 1;
    }
    printf("%s: all %d checks passed\n", suite, check_count);
    return 0;
}

#endif
