// liblmdb (apt: liblmdb-dev). Everything LMDB exports imports into Swift as is.
#pragma once
#include <lmdb.h>
