/* SEGGER RTT output without SEGGER's sources: one up-buffer a debug probe reads from RAM. */
#include "mcugen_rtt.h"

#include <stdint.h>

/* The layout a probe expects (SEGGER's documented RTT control block): a 16-byte
 * signature, the number of up- and down-buffers, then their descriptors. */
typedef struct {
    const char *name;
    char *buffer;
    uint32_t size;
    volatile uint32_t write_offset; /* written by the target */
    volatile uint32_t read_offset;  /* written by the probe */
    uint32_t flags;                 /* 0: skip what does not fit (never block) */
} mcugen_rtt_channel;

typedef struct {
    volatile char signature[16];
    int32_t max_up_buffers;
    int32_t max_down_buffers;
    mcugen_rtt_channel up[1];
    mcugen_rtt_channel down[1];
} mcugen_rtt_control_block;

mcugen_rtt_control_block _SEGGER_RTT __attribute__((aligned(4), used));
static char mcugen_rtt_up_buffer[MCUGEN_RTT_BUFFER_BYTES];
static char mcugen_rtt_down_buffer[16];

static void rtt_init(void)
{
    /* The signature is written last and not from one string literal, so that a probe
     * scanning memory never finds a copy of it before the block is ready. */
    static const char first[] = "SEGGER";
    static const char second[] = " RTT";
    int i;
    _SEGGER_RTT.max_up_buffers = 1;
    _SEGGER_RTT.max_down_buffers = 1;
    _SEGGER_RTT.up[0].name = "Terminal";
    _SEGGER_RTT.up[0].buffer = mcugen_rtt_up_buffer;
    _SEGGER_RTT.up[0].size = MCUGEN_RTT_BUFFER_BYTES;
    _SEGGER_RTT.up[0].write_offset = 0u;
    _SEGGER_RTT.up[0].read_offset = 0u;
    _SEGGER_RTT.up[0].flags = 0u;
    _SEGGER_RTT.down[0].name = "Terminal";
    _SEGGER_RTT.down[0].buffer = mcugen_rtt_down_buffer;
    _SEGGER_RTT.down[0].size = sizeof mcugen_rtt_down_buffer;
    _SEGGER_RTT.down[0].write_offset = 0u;
    _SEGGER_RTT.down[0].read_offset = 0u;
    _SEGGER_RTT.down[0].flags = 0u;
    __asm__ volatile("dmb" ::: "memory");
    for (i = 0; i < 16; ++i) {
        _SEGGER_RTT.signature[i] = '\0';
    }
    for (i = 0; i < 4; ++i) {
        _SEGGER_RTT.signature[6 + i] = second[i];
    }
    __asm__ volatile("dmb" ::: "memory");
    for (i = 0; i < 6; ++i) {
        _SEGGER_RTT.signature[i] = first[i];
    }
    __asm__ volatile("dmb" ::: "memory");
}

size_t mcugen_rtt_print(const char *text)
{
    mcugen_rtt_channel *up = &_SEGGER_RTT.up[0];
    size_t written = 0;
    if (_SEGGER_RTT.signature[0] != 'S') {
        rtt_init();
    }
    while (text[written] != '\0') {
        const uint32_t at = up->write_offset;
        const uint32_t next = at + 1u == up->size ? 0u : at + 1u;
        if (next == up->read_offset) {
            break; /* full: drop the rest */
        }
        up->buffer[at] = text[written];
        __asm__ volatile("dmb" ::: "memory");
        up->write_offset = next;
        ++written;
    }
    return written;
}
