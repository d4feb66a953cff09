"""The serving side: text pipeline, model loader, Kafka consumer and its tools.

Never imports `trainer`; the trainer imports from here so that training and serving share one
text pipeline and one model loader.
"""
