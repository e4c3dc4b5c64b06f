"""The default model's recipe, run by examples/train_default_model.py (one module per stage):

settings          labels, speakers, extraction, model, training, the mix (why: docs/default_model_recipe.md)
sources           label CSVs from ../shared/emo -> datasets -> samples
mix               the training sets: repeats, subsets, clips paired with English sentences
fitting           one run, the ensemble, what is set after training
measures          the card's figures and references
cross_validation  the speaker-independent folds over several seeds; the clips' temperatures
shipped           the shipped model, measured, and analyze on the shared clips
metrics, card     metrics.json and MODEL_CARD.md
"""
