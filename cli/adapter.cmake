# `flotilla model merge`, `flotilla model adapter {info,create}` and `--lora` for
# `model generate` (cli/src/adapter_command.cc, lora_options.h): LoRA adapter files.
target_link_libraries(flotilla PRIVATE flotilla_model)
