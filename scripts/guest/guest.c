/*
 * Tiny multiboot guest for shroud's migration captures.
 *
 * Loaded by QEMU with -kernel (multiboot, 32-bit protected mode, no paging).
 * It fills the low RAM between its own end and fill_end with seeded
 * pseudo-random data (the loader device fills the rest), then idles in
 * `hlt` and, on every PIT tick, dirties guest pages at a configured rate so
 * that QEMU's pre-copy needs several iterations:
 *   - a "hot" set of pages that is rewritten on every tick, and
 *   - a sweep over the data region at `dirty` bytes per second.
 * It prints progress lines on COM1 (a heartbeat every 2 s), which lets the
 * capture script check that the guest kept running on the destination.
 *
 * Kernel command line (key=value, all optional):
 *   seed=N      xorshift seed (default 1)
 *   dirty=BPS   sweep dirty rate in bytes per second (default 0)
 *   hot=N       number of hot pages rewritten every tick (default 0)
 *   base=ADDR   start of the dirtied region (default 0x1000000)
 *   fillend=A   fill low RAM with random data up to A (default 0x1000000)
 *   hz=N        PIT frequency (default 250)
 *
 * Build: gcc -m32 -ffreestanding -nostdlib ... -T link.ld (see lib/guest.sh).
 */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define MB_MAGIC 0x1BADB002u
#define MB_FLAGS 0x00000003u

__attribute__((section(".multiboot"), used, aligned(4)))
static const u32 mb_header[3] = { MB_MAGIC, MB_FLAGS, (u32)(-(int)(MB_MAGIC + MB_FLAGS)) };

u8 stack[16384] __attribute__((aligned(16), used));
volatile u32 ticks;
extern char _end[];

void kmain(u32 magic, u32 *mbi);

__asm__(
    ".text\n"
    ".globl _start\n"
    "_start:\n"
    "  cli\n"
    "  movl $stack+16384, %esp\n"
    "  pushl %ebx\n"
    "  pushl %eax\n"
    "  call kmain\n"
    "1: cli\n"
    "  hlt\n"
    "  jmp 1b\n"
    ".globl isr_timer\n"
    "isr_timer:\n"
    "  pushl %eax\n"
    "  incl ticks\n"
    "  movb $0x20, %al\n"
    "  outb %al, $0x20\n"
    "  popl %eax\n"
    "  iret\n"
    ".globl isr_irq\n"
    "isr_irq:\n"
    "  iret\n"
    ".globl isr_fault\n"
    "isr_fault:\n"
    "  cli\n"
    "2: hlt\n"
    "  jmp 2b\n");

extern void isr_timer(void), isr_irq(void), isr_fault(void);

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc_(char c)
{
    for (int i = 0; i < 100000 && !(inb(0x3fd) & 0x20); i++)
        ;
    outb(0x3f8, (u8)c);
}
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void putu(u32 v)
{
    char b[12]; int n = 0;
    do { b[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) putc_(b[--n]);
}
static void puthex(u32 v)
{
    puts_("0x");
    for (int i = 28; i >= 0; i -= 4) putc_("0123456789abcdef"[(v >> i) & 15]);
}

static u32 rng;
static inline u32 xs32(void) { u32 x = rng; x ^= x << 13; x ^= x >> 17; x ^= x << 5; return rng = x; }

static u32 parse_num(const char *s)
{
    u32 v = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (s += 2;; s++) {
            char c = *s;
            if (c >= '0' && c <= '9') v = v * 16 + (u32)(c - '0');
            else if (c >= 'a' && c <= 'f') v = v * 16 + (u32)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v = v * 16 + (u32)(c - 'A' + 10);
            else break;
        }
    } else {
        for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (u32)(*s - '0');
    }
    return v;
}

/* Find "key=" at a token start in cmdline; return pointer to the value. */
static const char *arg(const char *cmd, const char *key)
{
    if (!cmd) return 0;
    for (const char *p = cmd; *p; p++) {
        if (p != cmd && p[-1] != ' ') continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (!*k && *q == '=') return q + 1;
    }
    return 0;
}

struct idt_entry { u16 off_lo, sel; u8 zero, type; u16 off_hi; } __attribute__((packed));
struct dtr { u16 limit; u32 base; } __attribute__((packed));
static struct idt_entry idt[256];
static const unsigned long long gdt[3] = { 0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull };

static void set_gate(int n, void (*h)(void))
{
    u32 a = (u32)h;
    idt[n].off_lo = (u16)a; idt[n].off_hi = (u16)(a >> 16);
    idt[n].sel = 0x08; idt[n].zero = 0; idt[n].type = 0x8E;
}

static void fill_page(u32 *p)
{
    for (int i = 0; i < 1024; i++) p[i] = xs32() | 1u;   /* never a zero word */
}

void kmain(u32 magic, u32 *mbi)
{
    struct dtr g = { sizeof(gdt) - 1, (u32)gdt };
    __asm__ volatile("lgdt %0\n\t"
                     "ljmp $0x08, $1f\n"
                     "1:\n\t"
                     "movw $0x10, %%ax\n\t"
                     "movw %%ax, %%ds\n\tmovw %%ax, %%es\n\tmovw %%ax, %%ss\n\t"
                     "movw %%ax, %%fs\n\tmovw %%ax, %%gs\n\t"
                     : : "m"(g) : "eax", "memory");

    const char *cmd = 0;
    u32 ram_top = 0x2000000;
    if (magic == 0x2BADB002u) {
        if (mbi[0] & 1u) ram_top = 0x100000u + mbi[2] * 1024u;
        if (mbi[0] & 4u) cmd = (const char *)mbi[4];
    }
    const char *v;
    u32 seed = (v = arg(cmd, "seed")) ? parse_num(v) : 1;
    u32 dirty = (v = arg(cmd, "dirty")) ? parse_num(v) : 0;
    u32 hot = (v = arg(cmd, "hot")) ? parse_num(v) : 0;
    u32 base = (v = arg(cmd, "base")) ? parse_num(v) : 0x1000000u;
    u32 fillend = (v = arg(cmd, "fillend")) ? parse_num(v) : 0x1000000u;
    u32 hz = (v = arg(cmd, "hz")) ? parse_num(v) : 250;
    if (hz < 18 || hz > 2000) hz = 250;
    rng = seed * 2654435761u + 0x9E3779B9u;
    if (!rng) rng = 1;

    puts_("shroud-guest: start ram_top="); puthex(ram_top);
    puts_(" seed="); putu(seed); puts_(" dirty="); putu(dirty);
    puts_(" hot="); putu(hot); puts_(" hz="); putu(hz); puts_("\n");

    /* Fill low RAM after the kernel (64 KiB aligned) with random data. */
    u32 lo = ((u32)_end + 0xFFFFu) & ~0xFFFFu;
    if (fillend > ram_top) fillend = ram_top;
    for (u32 a = lo; a + 4096 <= fillend; a += 4096) fill_page((u32 *)a);

    /* Dirty region: [base, ram_top - 1 MiB) (top MiB is left to the BIOS). */
    u32 rend = ram_top > 0x100000u ? ram_top - 0x100000u : ram_top;
    if (base < lo || base >= rend) base = lo;
    u32 npages = (rend - base) / 4096u;
    if (hot > npages / 2) hot = npages / 2;

    /* PIC remap to 0x20/0x28, only IRQ0 unmasked; PIT channel 0 at hz. */
    for (int i = 0; i < 256; i++) set_gate(i, i < 32 ? isr_fault : isr_irq);
    set_gate(0x20, isr_timer);
    struct dtr d = { sizeof(idt) - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(d));
    outb(0x20, 0x11); outb(0xA0, 0x11);
    outb(0x21, 0x20); outb(0xA1, 0x28);
    outb(0x21, 4); outb(0xA1, 2);
    outb(0x21, 1); outb(0xA1, 1);
    outb(0x21, 0xFE); outb(0xA1, 0xFF);
    u32 div = 1193182u / hz;
    outb(0x43, 0x34); outb(0x40, (u8)div); outb(0x40, (u8)(div >> 8));

    puts_("shroud-guest: ready filled="); puthex(lo); puts_("-"); puthex(fillend);
    puts_(" region="); puthex(base); puts_("-"); puthex(rend);
    puts_(" pages="); putu(npages); puts_("\n");

    u32 per_tick = dirty / hz, rem = dirty % hz, acc = 0, frac = 0;
    u32 sweep = hot, seen = 0, dirtied = 0, beats = 0;
    for (;;) {
        __asm__ volatile("sti\n\thlt\n\tcli" ::: "memory");
        u32 now = ticks;
        while (seen != now) {
            seen++;
            for (u32 h = 0; h < hot; h++)     /* hot set: rewrite a few words */
                ((volatile u32 *)(base + h * 4096u))[xs32() & 1023] = xs32() | 1u;
            acc += per_tick;
            frac += rem;
            if (frac >= hz) { frac -= hz; acc++; }
            while (acc >= 4096u && npages > hot) {
                fill_page((u32 *)(base + sweep * 4096u));
                acc -= 4096u;
                dirtied++;
                if (++sweep >= npages) sweep = hot;
            }
            if (seen % (2u * hz) == 0) {
                beats++;
                puts_("shroud-guest: beat "); putu(beats);
                puts_(" dirtied_pages="); putu(dirtied); puts_("\n");
            }
        }
    }
}
