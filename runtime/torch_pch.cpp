// Translation unit that carries the precompiled header (see runtime/CMakeLists.txt).
