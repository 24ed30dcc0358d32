# `flotilla model pretrain|finetune|eval` (cli/src/train_command.cc): training on the
# engine, the tokenizer trainer and the device's sample store.
target_link_libraries(flotilla PRIVATE flotilla_model flotilla_device)
