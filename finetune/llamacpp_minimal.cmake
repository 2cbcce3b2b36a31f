# Passed to llama-cpp-python's build as CMAKE_PROJECT_llama.cpp_INCLUDE (the Makefile's export-tools): it runs right
# after llama.cpp's project() call. llama-cpp-python forces llama.cpp's "common" library on, which only llama.cpp's
# own tools and the multimodal (llava/mtmd) library use; the Python package loads libllama and libggml alone. Without
# it (and with LLAVA_BUILD=OFF) the compile has 74 translation units instead of 178.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp: the common library, used only by its tools" FORCE)
