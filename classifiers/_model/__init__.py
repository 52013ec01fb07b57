"""What `classifiers.model.CategoryModel` is made of (a private package; `classifiers.model` is its
public face).

    accept   the stacker and the calibrator (`Prediction` is defined here)
    bank     the base scorers: fit, score, out-of-fold scores
    predict  the per-row answer assembled from label probabilities
    proof    the auto-accept proof: the leaf cut, the back-off cut and the out-of-fold figures
    report   the out-of-fold report and the manifest
    rerank   the weighted stacker and the candidate reranker's features
    store    the model folder on disk
    text     the text fields and their embeddings
"""
