/* ALSA's error printer, routed into the doorbell's log.
 *
 * libasound prints its errors ("ALSA lib confmisc.c:855:(parse_card) cannot
 * find card '0'", a dozen of them on a machine without a sound card) straight
 * to standard error through a printf-style handler. A Rust function cannot be
 * variadic, so this one formats the message and hands it to Rust
 * (src/media/alsa_log.rs), which logs it at debug level.
 *
 * The prototype is declared here rather than taken from <alsa/asoundlib.h>
 * so that cross builds need no target headers beyond libc's. */
#include <stdarg.h>
#include <stdio.h>

typedef void (*snd_lib_error_handler_t)(const char *file, int line,
                                        const char *function, int err,
                                        const char *fmt, ...);
extern int snd_lib_error_set_handler(snd_lib_error_handler_t handler);

typedef void (*doorbell_alsa_sink)(const char *file, int line,
                                   const char *function, int err,
                                   const char *message);

static doorbell_alsa_sink sink;

static void handler(const char *file, int line, const char *function, int err,
                    const char *fmt, ...) {
    char message[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    if (sink)
        sink(file, line, function, err, message);
}

int doorbell_alsa_log_install(doorbell_alsa_sink s) {
    sink = s;
    return snd_lib_error_set_handler(handler);
}
