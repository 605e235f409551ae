// Every creator of this library, in one place for both registration styles.
#pragma once

#include "quarterMapDownPlugin.h"
#include "quarterMapUpPlugin.h"
#include "ss2dScanPlugin.h"
#include "vmeanbaScanPlugin.h"
