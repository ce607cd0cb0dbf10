/* SEGGER RTT output without SEGGER's sources: one up-buffer a debug probe reads from RAM. */
#ifndef MCUGEN_RTT_H
#define MCUGEN_RTT_H

#include <stddef.h>

/* Bytes of the up-buffer (channel 0, "Terminal"); a debugger drains it while the program runs. */
#ifndef MCUGEN_RTT_BUFFER_BYTES
#define MCUGEN_RTT_BUFFER_BYTES 1024
#endif

/* Writes `text` to RTT channel 0 and returns the number of bytes written. Never blocks:
 * what does not fit in the free part of the buffer is dropped (no probe attached, or a
 * probe that reads too slowly). The control block is the symbol _SEGGER_RTT, which
 * J-Link, pyOCD (`pyocd rtt`) and OpenOCD find by its "SEGGER RTT" signature. */
size_t mcugen_rtt_print(const char *text);

#endif /* MCUGEN_RTT_H */
