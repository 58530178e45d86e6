/*  version.h - floorpost's version: `floorpost --version`, the metric
    floorpost_build_info. */
#ifndef FP_VERSION_H
#define FP_VERSION_H

#define FP_VERSION "0.2.0"

#endif
