#include "emu_rt.h"
