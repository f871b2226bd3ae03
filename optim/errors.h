// errors.h: forwards to parallel/errors.h (kept until every include is updated).
#pragma once
#include "parallel/errors.h"
