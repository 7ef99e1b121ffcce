/* A CMSIS flash algorithm (FLM) for the synthetic "TESTCHIP1" pack used by the chip-model tests.
 * The chip model performs the operations in Python when the core is resumed at these entry
 * points, so the bodies never run; the layout (sections, symbols, FlashDevice) is what matters. */
#include <stdint.h>

struct FlashSectors {
    uint32_t szSector;
    uint32_t AddrSector;
};

struct FlashDevice {
    uint16_t Vers;
    char DevName[128];
    uint16_t DevType;
    uint32_t DevAdr;
    uint32_t szDev;
    uint32_t szPage;
    uint32_t Res;
    uint8_t valEmpty;
    uint32_t toProg;
    uint32_t toErase;
    struct FlashSectors sectors[2];
};

__attribute__((section("DevDscr"), used)) const struct FlashDevice FlashDevice = {
    0x0101, "TESTCHIP1 128KB Flash", 1, 0x08000000, 0x20000, 1024, 0, 0xFF, 100, 500,
    {{0x800, 0x000000}, {0xFFFFFFFF, 0xFFFFFFFF}},
};

static volatile uint32_t state;

__attribute__((section("PrgCode"))) int Init(uint32_t adr, uint32_t clk, uint32_t fnc) {
    state = adr ^ clk ^ fnc;
    return 0;
}
__attribute__((section("PrgCode"))) int UnInit(uint32_t fnc) {
    state = fnc;
    return 0;
}
__attribute__((section("PrgCode"))) int EraseChip(void) { return 0; }
__attribute__((section("PrgCode"))) int EraseSector(uint32_t adr) {
    state = adr;
    return 0;
}
__attribute__((section("PrgCode"))) int ProgramPage(uint32_t adr, uint32_t sz, const uint8_t *buf) {
    state = adr + sz + buf[0];
    return 0;
}
